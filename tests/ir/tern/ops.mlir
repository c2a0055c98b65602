// RUN: tdsl-opt %s | filecheck %s
// RUN: tdsl-opt %s --emit generic | tdsl-opt | filecheck %s
// RUN: tdsl-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC
// RUN: tdsl-opt %s --print-debuginfo | tdsl-opt --print-debuginfo | filecheck %s --check-prefix=LOC
// REQUIRES: mlir-opt
// RUN: tdsl-opt %s --emit generic --print-debuginfo | mlir-opt-19 --allow-unregistered-dialect --mlir-print-op-generic --mlir-print-debuginfo --mlir-print-local-scope | tdsl-opt | filecheck %s --check-prefix=MLIR

builtin.module attributes {tdsl.entry = @Net} {
  tdsl.layer @Net layer "Net" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param", precision = "ternary"}
    tdsl.param @fw : tensor<10x8xf32> {init = "kaiming_uniform", kind = "param", precision = "ternary"}
    tdsl.param @b : tensor<10xf32> {init = "zeros", kind = "param"}
    tern.packed_param @pw : !tern.packed<8x4x3x3, "2bit"> {kind = "param"}
    tern.packed_param @pf : !tern.packed<10x8, "base3"> {kind = "param"}
    tdsl.param @pw_scale : tensor<8xf32> {init = "ones", kind = "buffer"}
    tdsl.param @pf_scale : tensor<f32> {init = "ones", kind = "buffer"}
    tdsl.forward (%x: tensor<?x4x8x8xf32>, %v: tensor<?x8xf32>) -> (tensor<?x8x8x8xf32>, tensor<?x10xf32>, tensor<?x8x8x8xf32>, tensor<?x10xf32>, tensor<8x4x3x3xf32>) {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32>
      %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4x3x3xf32> -> (tensor<8x4x3x3xi2>, tensor<8xf32>) loc("net.tdsl":3:7)
      %y = tern.conv2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":4:9)
      %fw = tdsl.get_param @fw : tensor<10x8xf32>
      %b = tdsl.get_param @b : tensor<10xf32>
      %ft, %fs = tern.quantize %fw {delta = 5.000000e-02 : f64, per_channel = false, sparsity = 5.000000e-01 : f64, threshold = "sparsity"} : tensor<10x8xf32> -> (tensor<10x8xi2>, tensor<f32>)
      %z = tern.linear %v, %ft, %fs, %b : (tensor<?x8xf32>, tensor<10x8xi2>, tensor<f32>, tensor<10xf32>) -> tensor<?x10xf32>
      %p = tern.get_packed @pw : !tern.packed<8x4x3x3, "2bit">
      %ps = tdsl.get_param @pw_scale : tensor<8xf32>
      %py = tern.packed_conv2d %x, %p, %ps {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>) -> tensor<?x8x8x8xf32>
      %q = tern.get_packed @pf : !tern.packed<10x8, "base3">
      %qs = tdsl.get_param @pf_scale : tensor<f32>
      %pz = tern.packed_linear %v, %q, %qs, %b : (tensor<?x8xf32>, !tern.packed<10x8, "base3">, tensor<f32>, tensor<10xf32>) -> tensor<?x10xf32>
      %d = tern.dequantize %t, %s : (tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<8x4x3x3xf32>
      tdsl.return %y, %z, %py, %pz, %d : tensor<?x8x8x8xf32>, tensor<?x10xf32>, tensor<?x8x8x8xf32>, tensor<?x10xf32>, tensor<8x4x3x3xf32>
    }
  }
}

// CHECK:      tern.packed_param @pw : !tern.packed<8x4x3x3, "2bit"> {kind = "param"}
// CHECK-NEXT: tern.packed_param @pf : !tern.packed<10x8, "base3"> {kind = "param"}
// CHECK:      %[[W:.*]] = tdsl.get_param @w : tensor<8x4x3x3xf32>
// CHECK-NEXT: %[[T:.*]], %[[S:.*]] = tern.quantize %[[W]] {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4x3x3xf32> -> (tensor<8x4x3x3xi2>, tensor<8xf32>)
// CHECK-NEXT: %[[Y:.*]] = tern.conv2d %x, %[[T]], %[[S]] {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
// CHECK:      %[[FT:.*]], %[[FS:.*]] = tern.quantize %{{.*}} {delta = 5.000000e-02 : f64, per_channel = false, sparsity = 5.000000e-01 : f64, threshold = "sparsity"} : tensor<10x8xf32> -> (tensor<10x8xi2>, tensor<f32>)
// CHECK-NEXT: %[[Z:.*]] = tern.linear %v, %[[FT]], %[[FS]], %[[B:.*]] : (tensor<?x8xf32>, tensor<10x8xi2>, tensor<f32>, tensor<10xf32>) -> tensor<?x10xf32>
// CHECK-NEXT: %[[P:.*]] = tern.get_packed @pw : !tern.packed<8x4x3x3, "2bit">
// CHECK-NEXT: %[[PS:.*]] = tdsl.get_param @pw_scale : tensor<8xf32>
// CHECK-NEXT: %[[PY:.*]] = tern.packed_conv2d %x, %[[P]], %[[PS]] {{{.*}}} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>) -> tensor<?x8x8x8xf32>
// CHECK-NEXT: %[[Q:.*]] = tern.get_packed @pf : !tern.packed<10x8, "base3">
// CHECK-NEXT: %[[QS:.*]] = tdsl.get_param @pf_scale : tensor<f32>
// CHECK-NEXT: %[[PZ:.*]] = tern.packed_linear %v, %[[Q]], %[[QS]], %[[B]] : (tensor<?x8xf32>, !tern.packed<10x8, "base3">, tensor<f32>, tensor<10xf32>) -> tensor<?x10xf32>
// CHECK-NEXT: %[[D:.*]] = tern.dequantize %[[T]], %[[S]] : (tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<8x4x3x3xf32>
// CHECK-NEXT: tdsl.return %[[Y]], %[[Z]], %[[PY]], %[[PZ]], %[[D]]

// GENERIC:      "tern.packed_param"() <{sym_name = "pw", type = !tern.packed<8x4x3x3, "2bit">, kind = "param"}> : () -> ()
// GENERIC:      "tern.quantize"(%{{.*}}) <{delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"}> : (tensor<8x4x3x3xf32>) -> (tensor<8x4x3x3xi2>, tensor<8xf32>)
// GENERIC:      "tern.conv2d"(%{{.*}}, %{{.*}}, %{{.*}}) <{dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>}>
// GENERIC:      "tern.get_packed"() <{name = @pw}> : () -> !tern.packed<8x4x3x3, "2bit">
// GENERIC:      "tern.packed_linear"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) : (tensor<?x8xf32>, !tern.packed<10x8, "base3">, tensor<f32>, tensor<10xf32>) -> tensor<?x10xf32>

// LOC:  tern.quantize {{.*}} loc("net.tdsl":3:7)
// LOC:  tern.conv2d {{.*}} loc("net.tdsl":4:9)

// MLIR: tern.packed_param @pw : !tern.packed<8x4x3x3, "2bit"> {kind = "param"}
// MLIR: tern.quantize {{.*}} : tensor<8x4x3x3xf32> -> (tensor<8x4x3x3xi2>, tensor<8xf32>)
// MLIR: tern.packed_conv2d {{.*}} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>) -> tensor<?x8x8x8xf32>
// MLIR: tern.dequantize
