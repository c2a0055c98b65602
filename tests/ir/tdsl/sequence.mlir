// RUN: tdsl-opt %s | filecheck %s
// RUN: tdsl-opt %s --emit generic | tdsl-opt | filecheck %s
// The sequence-model ops (issue 15) round-trip in both forms.

// CHECK: func.func @f(%ids: tensor<?x?xi32>, %emb: tensor<16x8xf32>, %g: tensor<8xf32>, %q: tensor<?x?x8xf32>, %k: tensor<?x?x4xf32>) -> tensor<?x?x8xf32> {
// CHECK-NEXT: %x = tdsl.embedding %ids, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
// CHECK-NEXT: %n = tdsl.rms_norm %x, %g {eps = 1.000000e-06 : f64} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
// CHECK-NEXT: %p = tdsl.positions %ids : tensor<?x?xi32> -> tensor<?x?xi32>
// CHECK-NEXT: %r = tdsl.rope %q {base = 1.000000e+04 : f64, heads = 2 : i64} : tensor<?x?x8xf32> -> tensor<?x?x8xf32>
// CHECK-NEXT: %a = tdsl.attention %r, %k, %k {causal = true, heads = 2 : i64, kv_heads = 1 : i64} : (tensor<?x?x8xf32>, tensor<?x?x4xf32>, tensor<?x?x4xf32>) -> tensor<?x?x8xf32>
// CHECK-NEXT: %s = tdsl.slice %a {dim = -1 : i64, end = 8 : i64, start = 4 : i64} : tensor<?x?x8xf32> -> tensor<?x?x4xf32>
// CHECK-NEXT: %c = tdsl.concat %s, %s {dim = -1 : i64} : (tensor<?x?x4xf32>, tensor<?x?x4xf32>) -> tensor<?x?x8xf32>
// CHECK-NEXT: %t = tdsl.transpose %c {dim0 = 1 : i64, dim1 = 2 : i64} : tensor<?x?x8xf32> -> tensor<?x8x?xf32>
// CHECK-NEXT: %u = tdsl.permute %t {dims = array<i64: 0, 2, 1>} : tensor<?x8x?xf32> -> tensor<?x?x8xf32>
// CHECK-NEXT: %v = tdsl.silu %u : tensor<?x?x8xf32> -> tensor<?x?x8xf32>
// CHECK-NEXT: %w = tdsl.relu2 %v : tensor<?x?x8xf32> -> tensor<?x?x8xf32>
// CHECK-NEXT: func.return %w : tensor<?x?x8xf32>

func.func @f(%ids: tensor<?x?xi32>, %emb: tensor<16x8xf32>, %g: tensor<8xf32>, %q: tensor<?x?x8xf32>, %k: tensor<?x?x4xf32>) -> tensor<?x?x8xf32> {
  %x = tdsl.embedding %ids, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  %n = tdsl.rms_norm %x, %g {eps = 1.000000e-06 : f64} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  %p = tdsl.positions %ids : tensor<?x?xi32> -> tensor<?x?xi32>
  %r = tdsl.rope %q {base = 1.000000e+04 : f64, heads = 2 : i64} : tensor<?x?x8xf32> -> tensor<?x?x8xf32>
  %a = tdsl.attention %r, %k, %k {causal = true, heads = 2 : i64, kv_heads = 1 : i64} : (tensor<?x?x8xf32>, tensor<?x?x4xf32>, tensor<?x?x4xf32>) -> tensor<?x?x8xf32>
  %s = tdsl.slice %a {dim = -1 : i64, end = 8 : i64, start = 4 : i64} : tensor<?x?x8xf32> -> tensor<?x?x4xf32>
  %c = tdsl.concat %s, %s {dim = -1 : i64} : (tensor<?x?x4xf32>, tensor<?x?x4xf32>) -> tensor<?x?x8xf32>
  %t = tdsl.transpose %c {dim0 = 1 : i64, dim1 = 2 : i64} : tensor<?x?x8xf32> -> tensor<?x8x?xf32>
  %u = tdsl.permute %t {dims = array<i64: 0, 2, 1>} : tensor<?x8x?xf32> -> tensor<?x?x8xf32>
  %v = tdsl.silu %u : tensor<?x?x8xf32> -> tensor<?x?x8xf32>
  %w = tdsl.relu2 %v : tensor<?x?x8xf32> -> tensor<?x?x8xf32>
  func.return %w : tensor<?x?x8xf32>
}
