// RUN: tdsl-opt %s --split-input-file --verify-diagnostics
// The verifier messages of tdsl.pad2d.

func.func @f(%x: tensor<?x3x8x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.pad2d' pads must be four non-negative integers [left, right, top, bottom], but got [0, 1, 0]}}
  %y = tdsl.pad2d %x {pads = array<i64: 0, 1, 0>} : tensor<?x3x8x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x3x8x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.pad2d' pads must be four non-negative integers [left, right, top, bottom], but got [0, -1, 0, 1]}}
  %y = tdsl.pad2d %x {pads = array<i64: 0, -1, 0, 1>} : tensor<?x3x8x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.pad2d' input must have rank >= 2, but got rank 1 (tensor<8xf32>)}}
  %y = tdsl.pad2d %x {pads = array<i64: 0, 1, 0, 1>} : tensor<8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}
