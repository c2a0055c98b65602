// RUN: tdsl-opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "median"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<8xf32>) loc("bad.tdsl":1:5)
  func.return %t : tensor<8x4xi2>
}
// CHECK: bad.tdsl:1:5: error: 'tern.quantize' threshold must be one of twn, absmean, fixed, sparsity, but got "median"

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  %t, %s = tern.quantize %w {delta = 0.000000e+00 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "fixed"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<8xf32>) loc("bad.tdsl":2:5)
  func.return %t : tensor<8x4xi2>
}
// CHECK: bad.tdsl:2:5: error: 'tern.quantize' delta must be > 0, but got 0.0

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 1.000000e+00 : f64, threshold = "sparsity"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<8xf32>) loc("bad.tdsl":3:5)
  func.return %t : tensor<8x4xi2>
}
// CHECK: bad.tdsl:3:5: error: 'tern.quantize' sparsity must be in [0, 1), but got 1.0

// -----
func.func @f(%w: tensor<8x4xi8>) -> tensor<8x4xi2> {
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xi8> -> (tensor<8x4xi2>, tensor<8xf32>) loc("bad.tdsl":4:5)
  func.return %t : tensor<8x4xi2>
}
// CHECK: bad.tdsl:4:5: error: 'tern.quantize' weight must be a float tensor, but got tensor<8x4xi8>

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi8> {
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xf32> -> (tensor<8x4xi8>, tensor<8xf32>) loc("bad.tdsl":5:5)
  func.return %t : tensor<8x4xi8>
}
// CHECK: bad.tdsl:5:5: error: 'tern.quantize' trits must have element type i2, but got tensor<8x4xi8>

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<4x8xi2> {
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xf32> -> (tensor<4x8xi2>, tensor<8xf32>) loc("bad.tdsl":6:5)
  func.return %t : tensor<4x8xi2>
}
// CHECK: bad.tdsl:6:5: error: 'tern.quantize' trits shape tensor<4x8xi2> does not match the weight shape tensor<8x4xf32>

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = false, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<8xf32>) loc("bad.tdsl":7:5)
  func.return %t : tensor<8x4xi2>
}
// CHECK: bad.tdsl:7:5: error: 'tern.quantize' scale must have rank 0 (per tensor), but got tensor<8xf32>

// -----
func.func @f(%w: tensor<8x4xf32>) -> tensor<8x4xi2> {
  %t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64, threshold = "twn"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<4xf32>) loc("bad.tdsl":8:5)
  func.return %t : tensor<8x4xi2>
}
// CHECK: bad.tdsl:8:5: error: 'tern.quantize' scale has 4 entries but the weight has 8 output channels

// -----
func.func @f(%t: tensor<8x4xi2>, %s: tensor<8xf16>) -> tensor<8x4xf32> {
  %w = tern.dequantize %t, %s : (tensor<8x4xi2>, tensor<8xf16>) -> tensor<8x4xf32> loc("bad.tdsl":9:5)
  func.return %w : tensor<8x4xf32>
}
// CHECK: bad.tdsl:9:5: error: 'tern.dequantize' scale must have element type f32, but got tensor<8xf16>

// -----
func.func @f(%t: tensor<8x4xi2>, %s: tensor<8x1xf32>) -> tensor<8x4xf32> {
  %w = tern.dequantize %t, %s : (tensor<8x4xi2>, tensor<8x1xf32>) -> tensor<8x4xf32> loc("bad.tdsl":10:5)
  func.return %w : tensor<8x4xf32>
}
// CHECK: bad.tdsl:10:5: error: 'tern.dequantize' scale must have rank 0 or 1, but got rank 2 (tensor<8x1xf32>)

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %t: tensor<8x4x3x3xf32>, %s: tensor<8xf32>) -> tensor<*xf32> {
  %y = tern.conv2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>) -> tensor<*xf32> loc("bad.tdsl":11:5)
  func.return %y : tensor<*xf32>
}
// CHECK: bad.tdsl:11:5: error: 'tern.conv2d' weight must have element type i2, but got tensor<8x4x3x3xf32>

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %t: tensor<8x4xi2>, %s: tensor<8xf32>) -> tensor<*xf32> {
  %y = tern.conv2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4xi2>, tensor<8xf32>) -> tensor<*xf32> loc("bad.tdsl":12:5)
  func.return %y : tensor<*xf32>
}
// CHECK: bad.tdsl:12:5: error: 'tern.conv2d' weight must have rank 4 (O, C/groups, kh, kw), but got rank 2 (tensor<8x4xi2>)

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %t: tensor<8x4x3x3xi2>, %s: tensor<8xf32>) -> tensor<*xf32> {
  %y = tern.conv2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 0 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<*xf32> loc("bad.tdsl":13:5)
  func.return %y : tensor<*xf32>
}
// CHECK: bad.tdsl:13:5: error: 'tern.conv2d' stride must have 2 entries, but got 1

// -----
func.func @f(%x: tensor<?x4x8x8xf32>, %t: tensor<8x4x3x3xi2>, %s: tensor<8xf32>) -> tensor<*xf32> {
  %y = tern.conv2d %x, %t, %s {dilation = array<i64: 1, 1>, groups = 0 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<*xf32> loc("bad.tdsl":14:5)
  func.return %y : tensor<*xf32>
}
// CHECK: bad.tdsl:14:5: error: 'tern.conv2d' groups must be >= 1, but got 0

// -----
func.func @f(%x: tensor<?x8xf32>, %t: tensor<4x8xi2>, %s: tensor<f32>, %b: tensor<4x1xf32>) -> tensor<*xf32> {
  %y = tern.linear %x, %t, %s, %b : (tensor<?x8xf32>, tensor<4x8xi2>, tensor<f32>, tensor<4x1xf32>) -> tensor<*xf32> loc("bad.tdsl":15:5)
  func.return %y : tensor<*xf32>
}
// CHECK: bad.tdsl:15:5: error: 'tern.linear' bias must have rank 1, but got rank 2 (tensor<4x1xf32>)

// -----
func.func @f(%x: tensor<?x8xf32>, %p: !tern.packed<4x8x1, "2bit">, %s: tensor<4xf32>) -> tensor<*xf32> {
  %y = tern.packed_linear %x, %p, %s : (tensor<?x8xf32>, !tern.packed<4x8x1, "2bit">, tensor<4xf32>) -> tensor<*xf32> loc("bad.tdsl":16:5)
  func.return %y : tensor<*xf32>
}
// CHECK: bad.tdsl:16:5: error: 'tern.packed_linear' weight must have rank 2, but got rank 3 (!tern.packed<4x8x1, "2bit">)

// -----
func.func @f(%x: tensor<?x8xf32>, %p: !tern.packed<4x8, "2bit">, %s: tensor<8xf32>) -> tensor<*xf32> {
  %y = tern.packed_linear %x, %p, %s : (tensor<?x8xf32>, !tern.packed<4x8, "2bit">, tensor<8xf32>) -> tensor<*xf32> loc("bad.tdsl":17:5)
  func.return %y : tensor<*xf32>
}
// CHECK: bad.tdsl:17:5: error: 'tern.packed_linear' scale has 8 entries but the weight has 4 output channels

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tern.packed_param @w : !tern.packed<4x8, "2bit"> {kind = "state"} loc("bad.tdsl":18:5)
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      tdsl.return %x : tensor<?x8xf32>
    }
  }
}
// CHECK: bad.tdsl:18:5: error: 'tern.packed_param' @w kind must be "param" or "buffer", but got "state"

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tern.packed_param @w : !tern.packed<4x8, "2bit"> {kind = "param"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      %p = tern.get_packed @v : !tern.packed<4x8, "2bit"> loc("bad.tdsl":19:7)
      tdsl.return %x : tensor<?x8xf32>
    }
  }
}
// CHECK: bad.tdsl:19:7: error: 'tern.get_packed' refers to @v, which is not a tern.packed_param of layer @L

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tern.packed_param @w : !tern.packed<4x8, "2bit"> {kind = "param"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      %p = tern.get_packed @w : !tern.packed<4x8, "base3"> loc("bad.tdsl":20:7)
      tdsl.return %x : tensor<?x8xf32>
    }
  }
}
// CHECK: bad.tdsl:20:7: error: 'tern.get_packed' result type !tern.packed<4x8, "base3"> does not match the declared type !tern.packed<4x8, "2bit"> of @w

// -----
func.func @f(%p: !tern.packed<4x8, "3bit">) {
  func.return
}
// CHECK: '!tern.packed' format must be one of 2bit, base3, but got "3bit"
