// RUN: tdsl-opt %s | filecheck %s
// RUN: tdsl-opt %s --emit generic | tdsl-opt | filecheck %s
// RUN: tdsl-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC
// REQUIRES: mlir-opt
// RUN: tdsl-opt %s --emit generic --print-debuginfo | mlir-opt-19 --allow-unregistered-dialect --mlir-print-op-generic --mlir-print-debuginfo --mlir-print-local-scope | tdsl-opt | filecheck %s
// conv_transpose2d at its four levels (one ConvTransposeGeometry, CONV_KINDS) round-trips in both forms.

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %b: tensor<8xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %s: tensor<8xf32>) -> (tensor<?x8x16x16xf32>, tensor<?x8x16x16xf32>, tensor<?x8x17x17xf32>, tensor<?x8x16x16xf32>) {
  %a = tdsl.conv_transpose2d %x, %w, %b {dilation = array<i64: 1, 1>, groups = 1 : i64, output_padding = array<i64: 1, 1>, padding = array<i64: 1, 1>, stride = array<i64: 2, 2>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>) -> tensor<?x8x16x16xf32>
  %c = tern.conv_transpose2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 1 : i64, output_padding = array<i64: 1, 1>, padding = array<i64: 1, 1>, stride = array<i64: 2, 2>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<?x8x16x16xf32>
  %d = tern.packed_conv_transpose2d %x, %p, %s {dilation = array<i64: 1, 1>, groups = 1 : i64, output_padding = array<i64: 0, 0>, padding = array<i64: 0, 0>, stride = array<i64: 2, 2>} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>) -> tensor<?x8x17x17xf32>
  %e = kern.conv_transpose2d %x, %p scale %s bias %b {activation = "relu", dilation = array<i64: 1, 1>, format = "2bit", groups = 1 : i64, output_padding = array<i64: 1, 1>, padding = array<i64: 1, 1>, precision = "ternary", stride = array<i64: 2, 2>} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x16x16xf32>
  func.return %a, %c, %d, %e : tensor<?x8x16x16xf32>, tensor<?x8x16x16xf32>, tensor<?x8x17x17xf32>, tensor<?x8x16x16xf32>
}

// CHECK:      tdsl.conv_transpose2d %{{.*}}, %{{.*}}, %{{[^ ]*}} {dilation = array<i64: 1, 1>, groups = 1 : i64, output_padding = array<i64: 1, 1>, padding = array<i64: 1, 1>, stride = array<i64: 2, 2>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>) -> tensor<?x8x16x16xf32>
// CHECK-NEXT: tern.conv_transpose2d %{{.*}}, %{{.*}}, %{{[^ ]*}} {{{.*}}output_padding = array<i64: 1, 1>{{.*}}} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<?x8x16x16xf32>
// CHECK-NEXT: tern.packed_conv_transpose2d %{{.*}}, %{{.*}}, %{{[^ ]*}} {{{.*}}output_padding = array<i64: 0, 0>{{.*}}} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>) -> tensor<?x8x17x17xf32>
// CHECK-NEXT: kern.conv_transpose2d %{{.*}}, %{{.*}} scale %{{.*}} bias %{{[^ ]*}} {activation = "relu", {{.*}}output_padding = array<i64: 1, 1>{{.*}}precision = "ternary", stride = array<i64: 2, 2>} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x16x16xf32>

// GENERIC:      "tdsl.conv_transpose2d"(%{{.*}}, %{{.*}}, %{{.*}}) <{dilation = array<i64: 1, 1>, groups = 1 : i64, output_padding = array<i64: 1, 1>, padding = array<i64: 1, 1>, stride = array<i64: 2, 2>}>
// GENERIC:      "kern.conv_transpose2d"(
