// RUN: tdsl-opt %s --split-input-file --verify-diagnostics

func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  // expected-error @+1 {{'tern.quantize' threshold must be one of twn, absmean, fixed, sparsity, but got "median"}}
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "median"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<8xf32>)
  func.return %t : tensor<8x4xi2>
}

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  // expected-error @+1 {{'tern.quantize' delta must be > 0, but got 0.0}}
  %t, %s = tern.quantize %w {delta = 0.000000e+00 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "fixed"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<8xf32>)
  func.return %t : tensor<8x4xi2>
}

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  // expected-error @+1 {{'tern.quantize' sparsity must be in [0, 1), but got 1.0}}
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 1.000000e+00 : f64, threshold = "sparsity"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<8xf32>)
  func.return %t : tensor<8x4xi2>
}

// -----
func.func @f(%w: tensor<8x4xi8>) -> tensor<8x4xi2> {
  // expected-error @+1 {{'tern.quantize' weight must be a float tensor, but got tensor<8x4xi8>}}
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xi8> -> (tensor<8x4xi2>, tensor<8xf32>)
  func.return %t : tensor<8x4xi2>
}

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi8> {
  // expected-error @+1 {{'tern.quantize' trits must have element type i2, but got tensor<8x4xi8>}}
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xf32> -> (tensor<8x4xi8>, tensor<8xf32>)
  func.return %t : tensor<8x4xi8>
}

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<4x8xi2> {
  // expected-error @+1 {{'tern.quantize' trits shape tensor<4x8xi2> does not match the weight shape tensor<8x4xf32>}}
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xf32> -> (tensor<4x8xi2>, tensor<8xf32>)
  func.return %t : tensor<4x8xi2>
}

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  // expected-error @+1 {{'tern.quantize' scale must have rank 0 (per tensor), but got tensor<8xf32>}}
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = false, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<8xf32>)
  func.return %t : tensor<8x4xi2>
}

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  // expected-error @+1 {{'tern.quantize' scale has 4 entries but the weight has 8 output channels}}
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<4xf32>)
  func.return %t : tensor<8x4xi2>
}

// -----
func.func @f(%t: tensor<8x4xi2>, %s: tensor<8xf16>) -> tensor<8x4xf32> {
  // expected-error @+1 {{'tern.dequantize' scale must have element type f32, but got tensor<8xf16>}}
  %w = tern.dequantize %t, %s : (tensor<8x4xi2>, tensor<8xf16>) -> tensor<8x4xf32>
  func.return %w : tensor<8x4xf32>
}

// -----
func.func @f(%t: tensor<8x4xi2>, %s: tensor<8x1xf32>) -> tensor<8x4xf32> {
  // expected-error @+1 {{'tern.dequantize' scale must have rank 0 or 1, but got rank 2 (tensor<8x1xf32>)}}
  %w = tern.dequantize %t, %s : (tensor<8x4xi2>, tensor<8x1xf32>) -> tensor<8x4xf32>
  func.return %w : tensor<8x4xf32>
}

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %t: tensor<8x4x3x3xf32>, %s: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tern.conv2d' weight must have element type i2, but got tensor<8x4x3x3xf32>}}
  %y = tern.conv2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %t: tensor<8x4xi2>, %s: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tern.conv2d' weight must have rank 4 (O, C/groups, kh, kw), but got rank 2 (tensor<8x4xi2>)}}
  %y = tern.conv2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4xi2>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %t: tensor<8x4x3x3xi2>, %s: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tern.conv2d' stride must have 2 entries, but got 1}}
  %y = tern.conv2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 0 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %t: tensor<8x4x3x3xi2>, %s: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tern.conv2d' groups must be >= 1, but got 0}}
  %y = tern.conv2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 0 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %t: tensor<4x8xi2>, %s: tensor<f32>, %b: tensor<4x1xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tern.linear' bias must have rank 1, but got rank 2 (tensor<4x1xf32>)}}
  %y = tern.linear %x, %t, %s, %b : (tensor<?x8xf32>, tensor<4x8xi2>, tensor<f32>, tensor<4x1xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %p: !tern.packed<4x8x1, "2bit">, %s: tensor<4xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tern.packed_linear' weight must have rank 2, but got rank 3 (!tern.packed<4x8x1, "2bit">)}}
  %y = tern.packed_linear %x, %p, %s : (tensor<?x8xf32>, !tern.packed<4x8x1, "2bit">, tensor<4xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %p: !tern.packed<4x8, "2bit">, %s: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tern.packed_linear' scale has 8 entries but the weight has 4 output channels}}
  %y = tern.packed_linear %x, %p, %s : (tensor<?x8xf32>, !tern.packed<4x8, "2bit">, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    // expected-error @+1 {{'tern.packed_param' @w kind must be "param" or "buffer", but got "state"}}
    tern.packed_param @w : !tern.packed<4x8, "2bit"> {kind = "state"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      tdsl.return %x : tensor<?x8xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tern.packed_param @w : !tern.packed<4x8, "2bit"> {kind = "param"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      // expected-error @+1 {{'tern.get_packed' refers to @v, which is not a tern.packed_param of layer @L}}
      %p = tern.get_packed @v : !tern.packed<4x8, "2bit">
      tdsl.return %x : tensor<?x8xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tern.packed_param @w : !tern.packed<4x8, "2bit"> {kind = "param"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      // expected-error @+1 {{'tern.get_packed' result type !tern.packed<4x8, "base3"> does not match the declared type !tern.packed<4x8, "2bit"> of @w}}
      %p = tern.get_packed @w : !tern.packed<4x8, "base3">
      tdsl.return %x : tensor<?x8xf32>
    }
  }
}

// -----
// expected-error @+1 {{'!tern.packed' format must be one of 2bit, base3, but got "3bit"}}
func.func @f(%p: !tern.packed<4x8, "3bit">) {
  func.return
}
