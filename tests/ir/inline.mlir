// RUN: tdsl-opt %s -p inline --print-debuginfo | filecheck %s
// RUN: tdsl-opt %s -p 'ternarize{policy=all},pack,inline' | filecheck %s --check-prefix=PACKED

// CHECK-LABEL: tdsl.layer @Net layer "Net"
// CHECK-NEXT:    tdsl.param @scale : tensor<4xf32> {init = "ones", kind = "param"}
// CHECK-NEXT:    tdsl.param @block.w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
// CHECK-NEXT:    tdsl.param @block.bn.0.mean : tensor<8xf32> {init = "zeros", kind = "buffer"}
// CHECK-NEXT:    tdsl.param @fc.weight : tensor<4x8xf32> {init = "kaiming_uniform", kind = "param", precision = "fp16"}
// CHECK-NEXT:    tdsl.forward
// CHECK-NEXT:      %[[W:.*]] = tdsl.get_param @block.w : tensor<8x4x3x3xf32> loc("net.tdsl":2:5)
// CHECK-NEXT:      %[[C:.*]] = tdsl.conv2d %x, %[[W]] {{.*}} loc("net.tdsl":2:9)
// CHECK-NEXT:      %[[M:.*]] = tdsl.get_param @block.bn.0.mean : tensor<8xf32> loc("net.tdsl":5:5)
// CHECK-NEXT:      %[[A:.*]] = tdsl.relu %[[C]] {{.*}} loc("net.tdsl":6:9)
// CHECK-NEXT:      %[[F:.*]] = tdsl.flatten %[[A]] {{.*}} loc("net.tdsl":20:9)
// CHECK-NEXT:      %[[FW:.*]] = tdsl.get_param @fc.weight : tensor<4x8xf32> loc("net.tdsl":9:5)
// CHECK-NEXT:      %[[Y:.*]] = tdsl.linear %v, %[[FW]] {{.*}} loc("net.tdsl":9:9)
// CHECK-NEXT:      tdsl.return %[[F]], %[[Y]]
// CHECK-NOT:   tdsl.instance
// CHECK-NOT:   tdsl.call
// CHECK-NOT:   tdsl.layer

// PACKED:      tern.packed_param @block.w : !tern.packed<8x4x3x3, "2bit">
// PACKED-NEXT: tdsl.param @block.w_scale : tensor<8xf32>
// PACKED:      tdsl.param @fc.weight : tensor<4x8xf32> {{.*}}precision = "fp16"
// PACKED:      tern.get_packed @block.w
// PACKED-NEXT: tdsl.get_param @block.w_scale
// PACKED-NEXT: tern.packed_conv2d

builtin.module attributes {tdsl.entry = @Net} {
  tdsl.layer @Lin layer "Linear" params {} {
    tdsl.param @weight : tensor<4x8xf32> {init = "kaiming_uniform", kind = "param", precision = "fp16"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x4xf32> {
      %w = tdsl.get_param @weight : tensor<4x8xf32> loc("net.tdsl":9:5)
      %y = tdsl.linear %x, %w : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32> loc("net.tdsl":9:9)
      tdsl.return %y : tensor<?x4xf32>
    }
  }
  tdsl.layer @Stats layer "Stats" params {} {
    tdsl.param @mean : tensor<8xf32> {init = "zeros", kind = "buffer"}
    tdsl.forward (%x: tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32> {
      %m = tdsl.get_param @mean : tensor<8xf32> loc("net.tdsl":5:5)
      %y = tdsl.relu %x : tensor<?x8x8x8xf32> -> tensor<?x8x8x8xf32> loc("net.tdsl":6:9)
      tdsl.return %y : tensor<?x8x8x8xf32>
    }
  }
  tdsl.layer @Seq layer "Sequential" params {} {
    tdsl.instance @"0" = @Stats
    tdsl.forward (%x: tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32> {
      %y = tdsl.call @"0"(%x) : (tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":7:5)
      tdsl.return %y : tensor<?x8x8x8xf32>
    }
  }
  tdsl.layer @Block layer "Block" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.instance @bn = @Seq
    tdsl.forward (%x: tensor<?x4x8x8xf32>) -> tensor<?x8x8x8xf32> {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32> loc("net.tdsl":2:5)
      %c = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":2:9)
      %y = tdsl.call @bn(%c) : (tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":3:5)
      tdsl.return %y : tensor<?x8x8x8xf32>
    }
  }
  tdsl.layer @Net layer "Net" params {} {
    tdsl.param @scale : tensor<4xf32> {init = "ones", kind = "param"}
    tdsl.instance @block = @Block
    tdsl.instance @fc = @Lin
    tdsl.forward (%x: tensor<?x4x8x8xf32>, %v: tensor<?x8xf32>) -> (tensor<?x512xf32>, tensor<?x4xf32>) {
      %b = tdsl.call @block(%x) : (tensor<?x4x8x8xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":19:5)
      %f = tdsl.flatten %b {end_dim = -1 : i64, start_dim = 1 : i64} : tensor<?x8x8x8xf32> -> tensor<?x512xf32> loc("net.tdsl":20:9)
      %y = tdsl.call @fc(%v) : (tensor<?x8xf32>) -> tensor<?x4xf32> loc("net.tdsl":21:5)
      tdsl.return %f, %y : tensor<?x512xf32>, tensor<?x4xf32>
    }
  }
}
