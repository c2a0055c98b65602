// RUN: tdsl-opt %s --split-input-file --verify-diagnostics
// The verifier messages conv_transpose2d adds to conv2d's (its ConvTransposeGeometry).

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.conv_transpose2d' output_padding entries must be smaller than stride or dilation, but got [2, 0] with stride [2, 2], dilation [1, 1]}}
  %y = tdsl.conv_transpose2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, output_padding = array<i64: 2, 0>, padding = array<i64: 0, 0>, stride = array<i64: 2, 2>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %p: !tern.packed<8x4x3x3, "2bit">, %s: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'kern.conv_transpose2d' output_padding entries must be >= 0, but got [0, -1]}}
  %y = kern.conv_transpose2d %x, %p scale %s {activation = "none", dilation = array<i64: 1, 1>, format = "2bit", groups = 1 : i64, output_padding = array<i64: 0, -1>, padding = array<i64: 0, 0>, precision = "ternary", stride = array<i64: 2, 2>} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %t: tensor<8x4x3x3xi2>, %s: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tern.conv_transpose2d' output_padding must have 2 entries, but got 1}}
  %y = tern.conv_transpose2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 1 : i64, output_padding = array<i64: 1>, padding = array<i64: 0, 0>, stride = array<i64: 2, 2>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}
