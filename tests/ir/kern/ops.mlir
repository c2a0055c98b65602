// RUN: tdsl-opt %s | filecheck %s
// RUN: tdsl-opt %s --emit generic | tdsl-opt | filecheck %s
// RUN: tdsl-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC
// RUN: tdsl-opt %s --print-debuginfo | tdsl-opt --print-debuginfo | filecheck %s --check-prefix=LOC
// REQUIRES: mlir-opt
// RUN: tdsl-opt %s --emit generic --print-debuginfo | mlir-opt-19 --allow-unregistered-dialect --mlir-print-op-generic --mlir-print-debuginfo --mlir-print-local-scope | tdsl-opt | filecheck %s

func.func @kern(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %s: tensor<8xf32>, %c: tensor<8xf32>, %r: tensor<?x8x8x8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %lp: !tern.packed<8x8, "base3">, %ls: tensor<f32>) -> (tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>) {
  %a = kern.conv2d %x, %w {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, precision = "fp16", stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":3:7)
  %b = kern.conv2d %x, %t scale %s bias %c {activation = "relu6", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, precision = "ternary", stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
  %d = kern.conv2d %x, %p scale %s bn(%c, %c, %c, %c) residual %r {activation = "relu", dilation = array<i64: 1, 1>, eps = 1.000000e-05 : f64, format = "2bit", groups = 1 : i64, padding = array<i64: 1, 1>, precision = "ternary", stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32>
  %e = kern.linear %v, %lw bias %c bn(%c, %c, %c, %c) {activation = "relu", eps = 1.000000e-03 : f64, precision = "int8"} : (tensor<?x8xf32>, tensor<8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  %f = kern.linear %v, %lp scale %ls residual %v {activation = "none", format = "base3", precision = "ternary"} : (tensor<?x8xf32>, !tern.packed<8x8, "base3">, tensor<f32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  func.return %a, %b, %d, %e, %f : tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>
}

// CHECK-LABEL: func.func @kern
// CHECK:       kern.conv2d %{{.*}}, %{{[^ ]*}} {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, precision = "fp16", stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32>
// CHECK-NEXT:  kern.conv2d %{{.*}}, %{{.*}} scale %{{.*}} bias %{{[^ ]*}} {activation = "relu6", {{.*}}precision = "ternary"{{.*}}} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
// CHECK-NEXT:  kern.conv2d %{{.*}}, %{{.*}} scale %{{.*}} bn(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) residual %{{[^ ]*}} {activation = "relu", {{.*}}eps = 1.000000e-05 : f64, format = "2bit", {{.*}}precision = "ternary"{{.*}}} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32>
// CHECK-NEXT:  kern.linear %{{.*}}, %{{.*}} bias %{{.*}} bn(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) {activation = "relu", eps = 1.000000e-03 : f64, precision = "int8"} : (tensor<?x8xf32>, tensor<8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT:  kern.linear %{{.*}}, %{{.*}} scale %{{.*}} residual %{{[^ ]*}} {activation = "none", format = "base3", precision = "ternary"} : (tensor<?x8xf32>, !tern.packed<8x8, "base3">, tensor<f32>, tensor<?x8xf32>) -> tensor<?x8xf32>

// GENERIC:      "kern.conv2d"(%x, %w) <{{{.*}}operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0, 0>
// GENERIC:      "kern.conv2d"(%x, %t, %s, %c) <{{{.*}}operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 0, 0, 0, 0>
// GENERIC:      "kern.conv2d"(%x, %p, %s, %c, %c, %c, %c, %r) <{{{.*}}operandSegmentSizes = array<i32: 1, 1, 1, 0, 1, 1, 1, 1, 1>
// GENERIC:      "kern.linear"(%v, %lw, %c, %c, %c, %c, %c) <{{{.*}}operandSegmentSizes = array<i32: 1, 1, 0, 1, 1, 1, 1, 1, 0>
// GENERIC:      "kern.linear"(%v, %lp, %ls, %v) <{{{.*}}operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 1>

// LOC:          kern.conv2d {{.*}} loc("net.tdsl":3:7)
