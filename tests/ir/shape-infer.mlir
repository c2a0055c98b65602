// RUN: tdsl-opt %s --split-input-file -p shape-infer | filecheck %s

// CHECK-LABEL: tdsl.layer @Lin layer "Lin"
// CHECK: tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x4xf32>
// CHECK: tdsl.linear %x, %w, %b : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<?x4xf32>
// CHECK: tdsl.relu %{{.*}} : tensor<?x4xf32> -> tensor<?x4xf32>
builtin.module attributes {tdsl.entry = @Lin} {
  tdsl.layer @Lin layer "Lin" params {} {
    tdsl.param @w : tensor<4x8xf32> {init = "zeros", kind = "param"}
    tdsl.param @b : tensor<4xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<*xf32> {
      %w = tdsl.get_param @w : tensor<4x8xf32>
      %b = tdsl.get_param @b : tensor<4xf32>
      %y = tdsl.linear %x, %w, %b : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<*xf32>
      %r = tdsl.relu %y : tensor<*xf32> -> tensor<*xf32>
      tdsl.return %r : tensor<*xf32>
    }
  }
}

// -----
// CHECK-LABEL: tdsl.layer @Conv layer "Conv"
// CHECK: %[[A:.*]] = tdsl.conv2d {{.*}}stride = array<i64: 2, 2>{{.*}} -> tensor<?x16x16x16xf32>
// CHECK: %[[B:.*]] = tdsl.conv2d %[[A]], {{.*}}dilation = array<i64: 2, 2>{{.*}} -> tensor<?x16x12x12xf32>
// CHECK: %[[C:.*]] = tdsl.conv2d %[[B]], {{.*}}groups = 16 : i64{{.*}} -> tensor<?x16x6x12xf32>
// CHECK: %[[D:.*]] = tdsl.conv2d %[[C]], {{.*}}groups = 2 : i64{{.*}} -> tensor<?x8x6x12xf32>
builtin.module attributes {tdsl.entry = @Conv} {
  tdsl.layer @Conv layer "Conv" params {} {
    tdsl.param @w1 : tensor<16x3x3x3xf32> {init = "zeros", kind = "param"}
    tdsl.param @w2 : tensor<16x16x3x3xf32> {init = "zeros", kind = "param"}
    tdsl.param @dw : tensor<16x1x3x3xf32> {init = "zeros", kind = "param"}
    tdsl.param @gw : tensor<8x8x1x1xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x3x32x32xf32>) -> tensor<*xf32> {
      %w1 = tdsl.get_param @w1 : tensor<16x3x3x3xf32>
      %w2 = tdsl.get_param @w2 : tensor<16x16x3x3xf32>
      %dw = tdsl.get_param @dw : tensor<16x1x3x3xf32>
      %gw = tdsl.get_param @gw : tensor<8x8x1x1xf32>
      %a = tdsl.conv2d %x, %w1 {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 2, 2>} : (tensor<?x3x32x32xf32>, tensor<16x3x3x3xf32>) -> tensor<*xf32>
      %b = tdsl.conv2d %a, %w2 {dilation = array<i64: 2, 2>, groups = 1 : i64, padding = array<i64: 0, 0>, stride = array<i64: 1, 1>} : (tensor<*xf32>, tensor<16x16x3x3xf32>) -> tensor<*xf32>
      %c = tdsl.conv2d %b, %dw {dilation = array<i64: 1, 1>, groups = 16 : i64, padding = array<i64: 1, 1>, stride = array<i64: 2, 1>} : (tensor<*xf32>, tensor<16x1x3x3xf32>) -> tensor<*xf32>
      %d = tdsl.conv2d %c, %gw {dilation = array<i64: 1, 1>, groups = 2 : i64, padding = array<i64: 0, 0>, stride = array<i64: 1, 1>} : (tensor<*xf32>, tensor<8x8x1x1xf32>) -> tensor<*xf32>
      tdsl.return %d : tensor<*xf32>
    }
  }
}

// -----
// CHECK-LABEL: tdsl.layer @Pools layer "Pools"
// CHECK: tdsl.max_pool2d {{.*}} : tensor<?x8x32x32xf32> -> tensor<?x8x16x16xf32>
// CHECK: tdsl.avg_pool2d {{.*}} : tensor<?x8x16x16xf32> -> tensor<?x8x8x8xf32>
// CHECK: tdsl.adaptive_avg_pool2d {{.*}} : tensor<?x8x8x8xf32> -> tensor<?x8x2x2xf32>
// CHECK: tdsl.flatten {{.*}} : tensor<?x8x2x2xf32> -> tensor<?x32xf32>
// CHECK: tdsl.reshape {{.*}} : tensor<?x32xf32> -> tensor<?x4x8xf32>
// CHECK: tdsl.reshape {{.*}} : tensor<2x3x4xf32> -> tensor<6x4xf32>
builtin.module attributes {tdsl.entry = @Pools} {
  tdsl.layer @Pools layer "Pools" params {} {
    tdsl.forward (%x: tensor<?x8x32x32xf32>, %s: tensor<2x3x4xf32>) -> (tensor<*xf32>, tensor<*xf32>) {
      %a = tdsl.max_pool2d %x {kernel = array<i64: 2, 2>, padding = array<i64: 0, 0>, stride = array<i64: 2, 2>} : tensor<?x8x32x32xf32> -> tensor<*xf32>
      %b = tdsl.avg_pool2d %a {kernel = array<i64: 3, 3>, padding = array<i64: 1, 1>, stride = array<i64: 2, 2>} : tensor<*xf32> -> tensor<*xf32>
      %c = tdsl.adaptive_avg_pool2d %b {output_size = array<i64: 2, 2>} : tensor<*xf32> -> tensor<*xf32>
      %d = tdsl.flatten %c {end_dim = -1 : i64, start_dim = 1 : i64} : tensor<*xf32> -> tensor<*xf32>
      %e = tdsl.reshape %d {shape = array<i64: -1, 4, 8>} : tensor<*xf32> -> tensor<*xf32>
      %f = tdsl.reshape %s {shape = array<i64: -1, 4>} : tensor<2x3x4xf32> -> tensor<*xf32>
      tdsl.return %e, %f : tensor<*xf32>, tensor<*xf32>
    }
  }
}

// -----
// CHECK-LABEL: tdsl.layer @Bcast layer "Bcast"
// CHECK: tdsl.add %x, %b : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
// CHECK: tdsl.mul {{.*}} : (tensor<?x4xf32>, tensor<3x1x1xf32>) -> tensor<3x?x4xf32>
builtin.module attributes {tdsl.entry = @Bcast} {
  tdsl.layer @Bcast layer "Bcast" params {} {
    tdsl.forward (%x: tensor<?x4xf32>, %b: tensor<4xf32>, %c: tensor<3x1x1xf32>) -> tensor<*xf32> {
      %a = tdsl.add %x, %b : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<*xf32>
      %m = tdsl.mul %a, %c : (tensor<*xf32>, tensor<3x1x1xf32>) -> tensor<*xf32>
      tdsl.return %m : tensor<*xf32>
    }
  }
}

// -----
// One layer called with two input shapes: the first use refines it, the second clones it.
// CHECK-LABEL: tdsl.layer @Blk layer "Blk"
// CHECK-NEXT:    tdsl.forward (%x: tensor<?x8x16x16xf32>) -> tensor<?x8x16x16xf32>
// CHECK-LABEL: tdsl.layer @Blk_1 layer "Blk"
// CHECK-NEXT:    tdsl.forward (%x: tensor<?x8x4x4xf32>) -> tensor<?x8x4x4xf32>
// CHECK-LABEL: tdsl.layer @Net layer "Net"
// CHECK-NEXT:    tdsl.instance @a = @Blk
// CHECK-NEXT:    tdsl.instance @b = @Blk_1
// CHECK-NEXT:    tdsl.instance @c = @Blk
// CHECK:         tdsl.call @a(%x) : (tensor<?x8x16x16xf32>) -> tensor<?x8x16x16xf32>
// CHECK:         tdsl.call @b(%{{.*}}) : (tensor<?x8x4x4xf32>) -> tensor<?x8x4x4xf32>
// CHECK:         tdsl.call @c(%{{.*}}) : (tensor<?x8x16x16xf32>) -> tensor<?x8x16x16xf32>
// CHECK-NOT:   tdsl.layer @Unused
builtin.module attributes {tdsl.entry = @Net} {
  tdsl.layer @Blk layer "Blk" params {} {
    tdsl.forward (%x: tensor<?x8x?x?xf32>) -> tensor<*xf32> {
      %r = tdsl.relu %x : tensor<?x8x?x?xf32> -> tensor<*xf32>
      tdsl.return %r : tensor<*xf32>
    }
  }
  tdsl.layer @Unused layer "Unused" params {} {
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      tdsl.return %x : tensor<4xf32>
    }
  }
  tdsl.layer @Net layer "Net" params {} {
    tdsl.instance @a = @Blk
    tdsl.instance @b = @Blk
    tdsl.instance @c = @Blk
    tdsl.forward (%x: tensor<?x8x16x16xf32>) -> tensor<*xf32> {
      %a = tdsl.call @a(%x) : (tensor<?x8x16x16xf32>) -> tensor<*xf32>
      %p = tdsl.max_pool2d %a {kernel = array<i64: 4, 4>, padding = array<i64: 0, 0>, stride = array<i64: 4, 4>} : tensor<*xf32> -> tensor<*xf32>
      %b = tdsl.call @b(%p) : (tensor<*xf32>) -> tensor<*xf32>
      %c = tdsl.call @c(%a) : (tensor<*xf32>) -> tensor<*xf32>
      tdsl.return %c : tensor<*xf32>
    }
  }
}

// -----
// An input whose rank the program leaves open (`Tensor[float16]`) keeps the values
// computed from it unranked; everything else is still inferred, and callees keep
// their declared argument types.
// CHECK-LABEL: tdsl.layer @Lin layer "Lin"
// CHECK: tdsl.forward (%x: tensor<?x8xf16>) -> tensor<?x4xf16>
// CHECK-LABEL: tdsl.layer @Open layer "Open"
// CHECK: tdsl.forward (%x: tensor<*xf16>) -> (tensor<*xf16>, tensor<?x4xf16>)
// CHECK: tdsl.ternary_matmul %x, %w : (tensor<*xf16>, tensor<4x8xf16>) -> tensor<*xf16>
// CHECK: tdsl.call @lin(%x) : (tensor<*xf16>) -> tensor<?x4xf16>
builtin.module attributes {tdsl.entry = @Open} {
  tdsl.layer @Lin layer "Lin" params {} {
    tdsl.param @w : tensor<4x8xf16> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x8xf16>) -> tensor<*xf16> {
      %w = tdsl.get_param @w : tensor<4x8xf16>
      %y = tdsl.linear %x, %w : (tensor<?x8xf16>, tensor<4x8xf16>) -> tensor<*xf16>
      tdsl.return %y : tensor<*xf16>
    }
  }
  tdsl.layer @Open layer "Open" params {} {
    tdsl.param @w : tensor<4x8xf16> {init = "zeros", kind = "param"}
    tdsl.instance @lin = @Lin
    tdsl.forward (%x: tensor<*xf16>) -> (tensor<*xf16>, tensor<*xf16>) {
      %w = tdsl.get_param @w : tensor<4x8xf16>
      %y = tdsl.ternary_matmul %x, %w : (tensor<*xf16>, tensor<4x8xf16>) -> tensor<*xf16>
      %z = tdsl.call @lin(%x) : (tensor<*xf16>) -> tensor<*xf16>
      tdsl.return %y, %z : tensor<*xf16>, tensor<*xf16>
    }
  }
}

// -----
// CHECK-LABEL: tdsl.layer @Dims layer "Dims"
// CHECK: tdsl.unsqueeze %x {dim = 2 : i64} : tensor<?x8x40xf32> -> tensor<?x8x1x40xf32>
// CHECK: tdsl.squeeze %{{.*}} {dim = -2 : i64} : tensor<?x8x1x40xf32> -> tensor<?x8x40xf32>
builtin.module attributes {tdsl.entry = @Dims} {
  tdsl.layer @Dims layer "Dims" params {} {
    tdsl.forward (%x: tensor<?x8x40xf32>) -> tensor<*xf32> {
      %u = tdsl.unsqueeze %x {dim = 2 : i64} : tensor<?x8x40xf32> -> tensor<*xf32>
      %s = tdsl.squeeze %u {dim = -2 : i64} : tensor<*xf32> -> tensor<*xf32>
      tdsl.return %s : tensor<*xf32>
    }
  }
}
