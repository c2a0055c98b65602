// RUN: tdsl-opt %s --split-input-file -p canonicalize | filecheck %s

// Unreachable layers go; unused params and instances stay (they are state); dead pure
// ops and unused get_param reads go; returned values stay; identities fold.
// CHECK-NOT: tdsl.layer @Orphan
// CHECK-LABEL: tdsl.layer @Used layer "Used"
// CHECK-LABEL: tdsl.layer @Net layer "Net"
// CHECK-NEXT:    tdsl.param @w : tensor<4x8xf32>
// CHECK-NEXT:    tdsl.param @unused : tensor<4xf32>
// CHECK-NEXT:    tdsl.instance @sub = @Used
// CHECK-NEXT:    tdsl.instance @idle = @Used
// CHECK-NEXT:    tdsl.forward (%x: tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x4xf32>) {
// CHECK-NEXT:      %[[S:.*]] = tdsl.call @sub(%x)
// CHECK-NEXT:      %[[W:.*]] = tdsl.get_param @w
// CHECK-NEXT:      %[[Y:.*]] = tdsl.linear %[[S]], %[[W]]
// CHECK-NEXT:      %[[K:.*]] = tdsl.dropout %[[Y]] {p = 1.000000e-01 : f64}
// CHECK-NEXT:      tdsl.return %[[S]], %[[K]] : tensor<?x8xf32>, tensor<?x4xf32>
// CHECK-NEXT:    }
builtin.module attributes {tdsl.entry = @Net} {
  tdsl.layer @Orphan layer "Orphan" params {} {
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      tdsl.return %x : tensor<4xf32>
    }
  }
  tdsl.layer @Used layer "Used" params {} {
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      tdsl.return %x : tensor<?x8xf32>
    }
  }
  tdsl.layer @Net layer "Net" params {} {
    tdsl.param @w : tensor<4x8xf32> {init = "zeros", kind = "param"}
    tdsl.param @unused : tensor<4xf32> {init = "zeros", kind = "buffer"}
    tdsl.instance @sub = @Used
    tdsl.instance @idle = @Used
    tdsl.forward (%x: tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x4xf32>) {
      %s = tdsl.call @sub(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32>
      %u = tdsl.get_param @unused : tensor<4xf32>
      %dead = tdsl.relu %x : tensor<?x8xf32> -> tensor<?x8xf32>
      %d0 = tdsl.dropout %s {p = 0.0 : f64} : tensor<?x8xf32> -> tensor<?x8xf32>
      %f = tdsl.flatten %d0 {end_dim = -1 : i64, start_dim = 1 : i64} : tensor<?x8xf32> -> tensor<?x8xf32>
      %r = tdsl.reshape %f {shape = array<i64: -1, 8>} : tensor<?x8xf32> -> tensor<?x8xf32>
      %w = tdsl.get_param @w : tensor<4x8xf32>
      %y = tdsl.linear %r, %w : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
      %k = tdsl.dropout %y {p = 0.1 : f64} : tensor<?x4xf32> -> tensor<?x4xf32>
      tdsl.return %r, %k : tensor<?x8xf32>, tensor<?x4xf32>
    }
  }
}

// -----
// A reshape that changes the type is kept.
// CHECK-LABEL: tdsl.layer @Keep layer "Keep"
// CHECK:         tdsl.reshape %x {shape = array<i64: 2, 4>} : tensor<8xf32> -> tensor<2x4xf32>
builtin.module attributes {tdsl.entry = @Keep} {
  tdsl.layer @Keep layer "Keep" params {} {
    tdsl.forward (%x: tensor<8xf32>) -> tensor<2x4xf32> {
      %r = tdsl.reshape %x {shape = array<i64: 2, 4>} : tensor<8xf32> -> tensor<2x4xf32>
      tdsl.return %r : tensor<2x4xf32>
    }
  }
}
