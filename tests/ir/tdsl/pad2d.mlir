// RUN: tdsl-opt %s | filecheck %s
// RUN: tdsl-opt %s --emit generic | tdsl-opt | filecheck %s
// tdsl.pad2d (TensorFlow-style "same" padding of imported models) round-trips in both forms.

// CHECK: func.func @f(%x: tensor<?x3x8x8xf32>) -> tensor<?x3x9x11xf32> {
// CHECK-NEXT: %y = tdsl.pad2d %x {pads = array<i64: 0, 3, 0, 1>} : tensor<?x3x8x8xf32> -> tensor<?x3x9x11xf32>
// CHECK-NEXT: func.return %y : tensor<?x3x9x11xf32>

func.func @f(%x: tensor<?x3x8x8xf32>) -> tensor<?x3x9x11xf32> {
  %y = tdsl.pad2d %x {pads = array<i64: 0, 3, 0, 1>} : tensor<?x3x8x8xf32> -> tensor<?x3x9x11xf32>
  func.return %y : tensor<?x3x9x11xf32>
}
