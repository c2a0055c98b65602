// RUN: tdsl-opt %s -p ternarize --print-debuginfo | filecheck %s
// RUN: tdsl-opt %s -p 'ternarize{policy=all threshold=fixed delta=0.05 per-channel=false}' | filecheck %s --check-prefix=ALL
// RUN: tdsl-opt %s -p 'ternarize{policy=none}' | filecheck %s --check-prefix=NONE
// RUN: tdsl-opt %s -p 'ternarize{keep=int8 threshold=sparsity sparsity=0.5}' | filecheck %s --check-prefix=KEEP
// RUN: tdsl-opt %s -p 'ternarize{override="fc2.*=fp32"}' | filecheck %s --check-prefix=OVR
// RUN: tdsl-opt %s -p 'ternarize,shape-infer' | filecheck %s --check-prefix=SHAPE

// The entry's conv is the first weight-bearing op, fc3 the last linear: both kept at fp16;
// fc1 and fc2 (one shared @Lin) become ternary in a clone, since fc3 needs fp16.
// CHECK-LABEL: tdsl.layer @Lin layer "Linear"
// CHECK:       tdsl.param @weight : tensor<8x8xf32> {quant = {threshold = "twn", delta = 7.000000e-01 : f64, sparsity = 0.000000e+00 : f64, per_channel = true}, init = "kaiming_uniform", kind = "param", precision = "ternary"}
// CHECK:       %[[W:.*]] = tdsl.get_param @weight
// CHECK:       %[[T:.*]], %[[S:.*]] = tern.quantize %[[W]] {threshold = "twn", delta = 7.000000e-01 : f64, sparsity = 0.000000e+00 : f64, per_channel = true} : tensor<8x8xf32> -> (tensor<8x8xi2>, tensor<8xf32>) loc("net.tdsl":3:9)
// CHECK-NEXT:  tern.linear %x, %[[T]], %[[S]], %{{.*}} : (tensor<?x8xf32>, tensor<8x8xi2>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8xf32> loc("net.tdsl":3:9)
// CHECK-LABEL: tdsl.layer @Linear_1 layer "Linear"
// CHECK:       tdsl.param @weight : tensor<8x8xf32> {init = "kaiming_uniform", kind = "param", precision = "fp16"}
// CHECK:       tdsl.linear
// CHECK-LABEL: tdsl.layer @Net layer "Net"
// CHECK:       tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param", precision = "fp16"}
// CHECK-NEXT:  tdsl.instance @fc1 = @Lin
// CHECK-NEXT:  tdsl.instance @fc2 = @Lin
// CHECK-NEXT:  tdsl.instance @fc3 = @Linear_1
// CHECK:       tdsl.conv2d

// ALL-LABEL:   tdsl.layer @Lin layer "Linear"
// ALL:         tern.quantize %{{.*}} {threshold = "fixed", delta = 5.000000e-02 : f64, sparsity = 0.000000e+00 : f64, per_channel = false} : tensor<8x8xf32> -> (tensor<8x8xi2>, tensor<f32>)
// ALL-LABEL:   tdsl.layer @Net layer "Net"
// ALL:         tdsl.instance @fc3 = @Lin
// ALL:         %[[T:.*]], %[[S:.*]] = tern.quantize {{.*}} : tensor<8x4x3x3xf32> -> (tensor<8x4x3x3xi2>, tensor<f32>)
// ALL-NEXT:    tern.conv2d %x, %[[T]], %[[S]] {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<f32>) -> tensor<?x8x8x8xf32>
// ALL-NOT:     tdsl.layer

// NONE-NOT:    precision
// NONE-NOT:    tern.

// KEEP-LABEL:  tdsl.layer @Lin layer "Linear"
// KEEP:        tern.quantize %{{.*}} {threshold = "sparsity", delta = 7.000000e-01 : f64, sparsity = 5.000000e-01 : f64, per_channel = true}
// KEEP-LABEL:  tdsl.layer @Linear_1 layer "Linear"
// KEEP:        precision = "int8"
// KEEP-LABEL:  tdsl.layer @Net layer "Net"
// KEEP:        precision = "int8"

// fc1 ternary in @Lin, fc2 fp32 and fc3 fp16 each in a clone.
// OVR-LABEL:   tdsl.layer @Lin layer "Linear"
// OVR:         precision = "ternary"
// OVR-LABEL:   tdsl.layer @Linear_2 layer "Linear"
// OVR:         precision = "fp16"
// OVR-LABEL:   tdsl.layer @Linear_1 layer "Linear"
// OVR:         precision = "fp32"
// OVR-LABEL:   tdsl.layer @Net layer "Net"
// OVR:         tdsl.instance @fc1 = @Lin
// OVR-NEXT:    tdsl.instance @fc2 = @Linear_1
// OVR-NEXT:    tdsl.instance @fc3 = @Linear_2

// shape-infer applies the tern shape rules.
// SHAPE:       tern.linear {{.*}} -> tensor<?x8xf32>
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
