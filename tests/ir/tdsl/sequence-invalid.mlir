// RUN: tdsl-opt %s --split-input-file --verify-diagnostics
// The verifier messages of the sequence-model ops (issue 15).

func.func @f(%ids: tensor<?x?xf32>, %w: tensor<16x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.embedding' ids must be an integer tensor, but got tensor<?x?xf32>}}
  %y = tdsl.embedding %ids, %w : (tensor<?x?xf32>, tensor<16x8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%ids: tensor<?x?xi32>, %w: tensor<16xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.embedding' weight must have rank 2 (vocabulary, dim), but got rank 1 (tensor<16xf32>)}}
  %y = tdsl.embedding %ids, %w : (tensor<?x?xi32>, tensor<16xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %w: tensor<8x1xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.rms_norm' weight must have rank 1, but got rank 2 (tensor<8x1xf32>)}}
  %y = tdsl.rms_norm %x, %w {eps = 1.0e-06 : f64} : (tensor<?x8xf32>, tensor<8x1xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>, %w: tensor<8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.rms_norm' eps must be > 0, but got 0.0}}
  %y = tdsl.rms_norm %x, %w {eps = 0.0 : f64} : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x3x4xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.permute' dims must be a permutation of 0..2, but got [0, 2, 2]}}
  %y = tdsl.permute %x {dims = array<i64: 0, 2, 2>} : tensor<?x3x4xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x3x4xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.permute' input must have rank 2 (one entry of dims per dim), but got rank 3 (tensor<?x3x4xf32>)}}
  %y = tdsl.permute %x {dims = array<i64: 1, 0>} : tensor<?x3x4xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x3x4xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.transpose' dim1 3 is out of range for input of rank 3 (tensor<?x3x4xf32>)}}
  %y = tdsl.transpose %x {dim0 = 0 : i64, dim1 = 3 : i64} : tensor<?x3x4xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.slice' end must be > start, but got start 4 and end 4}}
  %y = tdsl.slice %x {dim = 1 : i64, end = 4 : i64, start = 4 : i64} : tensor<?x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.slice' dim 2 is out of range for input of rank 2 (tensor<?x8xf32>)}}
  %y = tdsl.slice %x {dim = 2 : i64, end = 4 : i64, start = 0 : i64} : tensor<?x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%a: tensor<?x8xf32>, %b: tensor<?x8xi32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.concat' operands must have the same element type, but lhs is tensor<?x8xf32> and rhs is tensor<?x8xi32>}}
  %y = tdsl.concat %a, %b {dim = -1 : i64} : (tensor<?x8xf32>, tensor<?x8xi32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.rope' input must have rank 3 (N, T, heads*head_dim), but got rank 2 (tensor<?x8xf32>)}}
  %y = tdsl.rope %x {base = 1.0e+04 : f64, heads = 2 : i64} : tensor<?x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%x: tensor<?x?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.rope' base must be > 1, but got 1.0}}
  %y = tdsl.rope %x {base = 1.0 : f64, heads = 2 : i64} : tensor<?x?x8xf32> -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%q: tensor<?x?x12xf32>, %k: tensor<?x?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.attention' heads (3) must be a positive multiple of kv_heads (2)}}
  %y = tdsl.attention %q, %k, %k {causal = true, heads = 3 : i64, kv_heads = 2 : i64} : (tensor<?x?x12xf32>, tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}

// -----
func.func @f(%q: tensor<?x12xf32>, %k: tensor<?x?x8xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{'tdsl.attention' query must have rank 3 (N, T, heads*head_dim), but got rank 2 (tensor<?x12xf32>)}}
  %y = tdsl.attention %q, %k, %k {causal = false, heads = 2 : i64, kv_heads = 2 : i64} : (tensor<?x12xf32>, tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}
