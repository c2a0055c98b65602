// RUN: tdsl-opt %s --split-input-file --verify-diagnostics
// RUN: not tdsl-opt %s --split-input-file 2>&1 | filecheck %s --check-prefix=FIRST

// A verifier failure is reported once, at the failing op's position in this file (it has no loc), with its line.
// FIRST: invalid.mlir:12:3: error: 'tdsl.linear' weight must have rank 2, but got rank 3 (tensor<4x8x1xf32>)
// FIRST-NEXT: %y = tdsl.linear %x, %w
// FIRST-NEXT: {{^  \^$}}
// FIRST-NOT: Traceback

func.func @f(%x: tensor<?x8xf32>, %w: tensor<4x8x1xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.linear' weight must have rank 2, but got rank 3 (tensor<4x8x1xf32>)}}
  %y = tdsl.linear %x, %w : (tensor<?x8xf32>, tensor<4x8x1xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %w: tensor<4x8xf32>, %b: tensor<4x1xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.linear' bias must have rank 1, but got rank 2 (tensor<4x1xf32>)}}
  %y = tdsl.linear %x, %w, %b : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8x8xf32>, %w: tensor<4x8x3x3xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.conv2d' input must have rank 4 (N, C, H, W), but got rank 3 (tensor<?x8x8xf32>)}}
  %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 0, 0>, stride = array<i64: 1, 1>} : (tensor<?x8x8xf32>, tensor<4x8x3x3xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8x8x8xf32>, %w: tensor<4x8x3x3xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.conv2d' stride must have 2 entries, but got 1}}
  %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 0, 0>, stride = array<i64: 1>} : (tensor<?x8x8x8xf32>, tensor<4x8x3x3xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8x8x8xf32>, %w: tensor<4x8x3x3xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.conv2d' dilation entries must be >= 1, but got [0, 1]}}
  %y = tdsl.conv2d %x, %w {dilation = array<i64: 0, 1>, groups = 1 : i64, padding = array<i64: 0, 0>, stride = array<i64: 1, 1>} : (tensor<?x8x8x8xf32>, tensor<4x8x3x3xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8x8x8xf32>, %w: tensor<4x8x3x3xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.conv2d' groups must be >= 1, but got 0}}
  %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 0 : i64, padding = array<i64: 0, 0>, stride = array<i64: 1, 1>} : (tensor<?x8x8x8xf32>, tensor<4x8x3x3xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %m: tensor<8xf32>) -> tensor<*xf32> {
  %y = tdsl.batch_norm %x, %m, %m, %m, %m {eps = 1.0e-05 : f64, momentum = 0.1 : f64} : (tensor<?x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<*xf32>
  // expected-error @+1 {{'tdsl.batch_norm' mean must have rank 1, but got rank 2 (tensor<?x8xf32>)}}
  %z = tdsl.batch_norm %x, %x, %m, %m, %m {eps = 1.0e-05 : f64, momentum = 0.1 : f64} : (tensor<?x8xf32>, tensor<?x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %m: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.layer_norm' eps must be > 0, but got 0.0}}
  %y = tdsl.layer_norm %x, %m, %m {eps = 0.0 : f64} : (tensor<?x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %m: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.layer_norm' weight must have rank 1, but got rank 2 (tensor<?x8xf32>)}}
  %y = tdsl.layer_norm %x, %x, %m {eps = 1.0e-05 : f64} : (tensor<?x8xf32>, tensor<?x8xf32>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %w: tensor<8x4xf32>) -> tensor<*xf32> {
  %y = tdsl.matmul %x, %x : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<*xf32>
  %z = tdsl.matmul %y, %x : (tensor<*xf32>, tensor<?x8xf32>) -> tensor<*xf32>
  %b = tdsl.reshape %x {shape = array<i64: 8>} : tensor<?x8xf32> -> tensor<8xf32>
  // expected-error @+1 {{'tdsl.matmul' rhs must have rank >= 2, but got rank 1 (tensor<8xf32>)}}
  %m = tdsl.matmul %x, %b : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %w: tensor<4x8x2xi2>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.ternary_matmul' weight must have rank 2, but got rank 3 (tensor<4x8x2xi2>)}}
  %y = tdsl.ternary_matmul %x, %w : (tensor<?x8xf32>, tensor<4x8x2xi2>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.softmax' dim 2 is out of range for input of rank 2 (tensor<?x8xf32>)}}
  %y = tdsl.softmax %x {dim = 2 : i64} : tensor<?x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.dropout' p must be in [0, 1), but got 1.5}}
  %y = tdsl.dropout %x {p = 1.5 : f64} : tensor<?x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %h: tensor<8xf16>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.add' operands must have the same element type, but lhs is tensor<?x8xf32> and rhs is tensor<8xf16>}}
  %y = tdsl.add %x, %h : (tensor<?x8xf32>, tensor<8xf16>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8x4x4xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.max_pool2d' padding must be at most half the kernel, but got padding [2, 0] for kernel [2, 2]}}
  %y = tdsl.max_pool2d %x {kernel = array<i64: 2, 2>, padding = array<i64: 2, 0>, stride = array<i64: 2, 2>} : tensor<?x8x4x4xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8x4xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.avg_pool2d' input must have rank 4 (N, C, H, W), but got rank 3 (tensor<?x8x4xf32>)}}
  %y = tdsl.avg_pool2d %x {kernel = array<i64: 2, 2>, padding = array<i64: 0, 0>, stride = array<i64: 2, 2>} : tensor<?x8x4xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8x4x4xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.adaptive_avg_pool2d' output_size entries must be >= 1, but got [1, 0]}}
  %y = tdsl.adaptive_avg_pool2d %x {output_size = array<i64: 1, 0>} : tensor<?x8x4x4xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.flatten' start_dim 1 and end_dim 0 do not select a dim range of input of rank 2 (tensor<?x8xf32>)}}
  %y = tdsl.flatten %x {end_dim = 0 : i64, start_dim = 1 : i64} : tensor<?x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.reshape' shape entries must be positive or -1, but got [-1, 0]}}
  %y = tdsl.reshape %x {shape = array<i64: -1, 0>} : tensor<?x8xf32> -> tensor<*xf32>
  %z = tdsl.reshape %x {shape = array<i64: -1, -1>} : tensor<?x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f() -> tensor<3xf32> {
  // expected-error @+1 {{'tdsl.constant' result type tensor<4xf32> does not match the value type tensor<3xf32>}}
  %c = "tdsl.constant"() <{value = dense<1.0> : tensor<3xf32>}> : () -> tensor<4xf32>
  func.return %c : tensor<4xf32>
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    // expected-error @+1 {{'tdsl.param' @w init must be one of kaiming_uniform, uniform, zeros, ones, randn, random_ternary, constant, but got "xavier"}}
    tdsl.param @w : tensor<4xf32> {init = "xavier", kind = "param"}
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      tdsl.return %x : tensor<4xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    // expected-error @+1 {{'tdsl.param' @w kind must be "param" or "buffer", but got "state"}}
    tdsl.param @w : tensor<4xf32> {init = "zeros", kind = "state"}
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      tdsl.return %x : tensor<4xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tdsl.param @w : tensor<4xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      // expected-error @+1 {{'tdsl.get_param' refers to @wieght, which is not a tdsl.param of layer @L}}
      %w = tdsl.get_param @wieght : tensor<4xf32>
      tdsl.return %w : tensor<4xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tdsl.param @w : tensor<4xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      // expected-error @+1 {{'tdsl.get_param' result type tensor<8xf32> does not match the declared type tensor<4xf32> of @w}}
      %w = tdsl.get_param @w : tensor<8xf32>
      tdsl.return %x : tensor<4xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      // expected-error @+1 {{'tdsl.call' refers to @fc, which is not a tdsl.instance of layer @L}}
      %y = tdsl.call @fc(%x) : (tensor<4xf32>) -> tensor<4xf32>
      tdsl.return %y : tensor<4xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    // expected-error @+1 {{'tdsl.instance' @fc refers to @Nope, which is not a tdsl.layer of the module}}
    tdsl.instance @fc = @Nope
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      tdsl.return %x : tensor<4xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  // expected-error @+1 {{'tdsl.layer' @L must hold exactly one tdsl.forward, but holds 0}}
  tdsl.layer @L layer "L" params {} {
    tdsl.param @w : tensor<4xf32> {init = "zeros", kind = "param"}
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    // expected-error @+1 {{'tdsl.forward' returns (tensor<4xf32>) but function_type declares (tensor<8xf32>)}}
    tdsl.forward (%x: tensor<4xf32>) -> tensor<8xf32> {
      tdsl.return %x : tensor<4xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    // expected-error @+1 {{'tdsl.forward' arg_names has 2 entries for 1 arguments}}
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> attributes {arg_names = ["x", "y"]} {
      tdsl.return %x : tensor<4xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      // expected-error @+1 {{'tdsl.return' names has 2 entries for 1 values}}
      tdsl.return %x : tensor<4xf32> {names = ["a", "b"]}
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @L} {
  tdsl.layer @L layer "L" params {} {
    tdsl.forward (%x: tensor<4x8xf32>) -> tensor<*xf32> {
      // expected-error @+1 {{'tdsl.unsqueeze' dim 3 is out of range for input of rank 2 (tensor<4x8xf32>)}}
      %y = tdsl.unsqueeze %x {dim = 3 : i64} : tensor<4x8xf32> -> tensor<*xf32>
      tdsl.return %y : tensor<*xf32>
    }
  }
}
