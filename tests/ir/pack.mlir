// RUN: tdsl-opt %s -p 'ternarize{policy=all},pack' --print-debuginfo | filecheck %s
// RUN: tdsl-opt %s -p 'ternarize{policy=all per-channel=false},pack{format=base3}' | filecheck %s --check-prefix=BASE3
// RUN: tdsl-opt %s -p 'ternarize{policy=all},pack' --emit generic | tdsl-opt | filecheck %s --check-prefix=RT
// RUN: not tdsl-opt %s -p pack 2>&1 | filecheck %s --check-prefix=NOTERN
// RUN: not tdsl-opt %s -p 'ternarize,pack{format=3bit}' 2>&1 | filecheck %s --check-prefix=FMT

// CHECK-LABEL: tdsl.layer @Lin layer "Linear"
// CHECK-NEXT:  tern.packed_param @weight : !tern.packed<8x8, "2bit"> {kind = "param", quant = {threshold = "twn", delta = 7.000000e-01 : f64, sparsity = 0.000000e+00 : f64, per_channel = true}}
// CHECK-NEXT:  tdsl.param @weight_scale : tensor<8xf32> {init = "ones", kind = "buffer"}
// CHECK-NEXT:  tdsl.param @bias : tensor<8xf32>
// CHECK:       %[[P:.*]] = tern.get_packed @weight : !tern.packed<8x8, "2bit"> loc("net.tdsl":3:9)
// CHECK-NEXT:  %[[S:.*]] = tdsl.get_param @weight_scale : tensor<8xf32> loc("net.tdsl":3:9)
// CHECK-NEXT:  %[[Y:.*]] = tern.packed_linear %x, %[[P]], %[[S]], %{{.*}} : (tensor<?x8xf32>, !tern.packed<8x8, "2bit">, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8xf32> loc("net.tdsl":3:9)
// CHECK-NEXT:  tdsl.return %[[Y]]
// CHECK-LABEL: tdsl.layer @Net layer "Net"
// CHECK-NEXT:  tern.packed_param @w : !tern.packed<8x4x3x3, "2bit">
// CHECK-NEXT:  tdsl.param @w_scale : tensor<8xf32> {init = "ones", kind = "buffer"}
// CHECK:       tern.packed_conv2d %x, %{{.*}}, %{{.*}} {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":9:7)
// CHECK-NOT:   tern.quantize

// BASE3-LABEL: tdsl.layer @Lin layer "Linear"
// BASE3:       tern.packed_param @weight : !tern.packed<8x8, "base3">
// BASE3-NEXT:  tdsl.param @weight_scale : tensor<f32> {init = "ones", kind = "buffer"}
// BASE3:       tern.packed_linear {{.*}} : (tensor<?x8xf32>, !tern.packed<8x8, "base3">, tensor<f32>, tensor<8xf32>) -> tensor<?x8xf32>

// RT-LABEL:    tdsl.layer @Net layer "Net"
// RT:          tern.packed_conv2d

// NOTERN: error: pack: no ternary weights; run ternarize first
// FMT: error: pack: format must be one of 2bit, base3, got '3bit'
builtin.module attributes {tdsl.entry = @Net} {
  tdsl.layer @Lin layer "Linear" params {} {
    tdsl.param @weight : tensor<8x8xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.param @bias : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      %w = tdsl.get_param @weight : tensor<8x8xf32>
      %b = tdsl.get_param @bias : tensor<8xf32>
      %y = tdsl.linear %x, %w, %b : (tensor<?x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<?x8xf32> loc("net.tdsl":3:9)
      tdsl.return %y : tensor<?x8xf32>
    }
  }
  tdsl.layer @Net layer "Net" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.instance @fc1 = @Lin
    tdsl.instance @fc2 = @Lin
    tdsl.instance @fc3 = @Lin
    tdsl.forward (%x: tensor<?x4x8x8xf32>, %v: tensor<?x8xf32>) -> (tensor<?x8x8x8xf32>, tensor<?x8xf32>) {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32>
      %c = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":9:7)
      %a = tdsl.call @fc1(%v) : (tensor<?x8xf32>) -> tensor<?x8xf32>
      %b = tdsl.call @fc2(%a) : (tensor<?x8xf32>) -> tensor<?x8xf32>
      %d = tdsl.call @fc3(%b) : (tensor<?x8xf32>) -> tensor<?x8xf32>
      tdsl.return %c, %d : tensor<?x8x8x8xf32>, tensor<?x8xf32>
    }
  }
}
