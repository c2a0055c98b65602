// RUN: tdsl-opt %s | filecheck %s
// RUN: tdsl-opt %s --emit generic | tdsl-opt | filecheck %s
// RUN: tdsl-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC
// RUN: tdsl-opt %s --print-debuginfo | tdsl-opt --print-debuginfo | filecheck %s --check-prefix=LOC
// REQUIRES: mlir-opt
// RUN: tdsl-opt %s --emit generic --print-debuginfo | mlir-opt-19 --allow-unregistered-dialect --mlir-print-op-generic --mlir-print-debuginfo --mlir-print-local-scope | tdsl-opt | filecheck %s --check-prefix=MLIR

builtin.module attributes {tdsl.entry = @Net} {
  tdsl.layer @Block layer "Block" params {c = 8 : i64, act = "relu", scale = 5.000000e-01 : f64, flags = [true, false], bias = true} {
    tdsl.param @w : tensor<8x8x3x3xf32> {init = "kaiming_uniform", kind = "param", init_args = {fan_in = 72 : i64}}
    tdsl.param @t : tensor<8x8xi2> {init = "random_ternary", kind = "param", precision = "ternary"}
    tdsl.param @mean : tensor<8xf32> {init = "zeros", kind = "buffer"}
    tdsl.param @var : tensor<8xf32> {init = "ones", kind = "buffer"}
    tdsl.param @g : tensor<8xf32> {init = "ones", kind = "param"}
    tdsl.param @b : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x8x4x4xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) attributes {arg_names = ["x"]} {
      %w = tdsl.get_param @w : tensor<8x8x3x3xf32>
      %t = tdsl.get_param @t : tensor<8x8xi2>
      %mean = tdsl.get_param @mean : tensor<8xf32>
      %var = tdsl.get_param @var : tensor<8xf32>
      %g = tdsl.get_param @g : tensor<8xf32>
      %b = tdsl.get_param @b : tensor<8xf32>
      %c = tdsl.conv2d %x, %w, %b {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x8x4x4xf32>, tensor<8x8x3x3xf32>, tensor<8xf32>) -> tensor<?x8x4x4xf32> loc("net.tdsl":5:9)
      %c2 = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 0, 0>, stride = array<i64: 1, 1>} : (tensor<?x8x4x4xf32>, tensor<8x8x3x3xf32>) -> tensor<*xf32>
      %bn = tdsl.batch_norm %c, %mean, %var, %g, %b {eps = 1.000000e-05 : f64, momentum = 1.000000e-01 : f64} : (tensor<?x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x4x4xf32>
      %r = tdsl.relu %bn : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
      %r6 = tdsl.relu6 %r : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
      %ge = tdsl.gelu %r6 : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
      %sg = tdsl.sigmoid %ge : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
      %th = tdsl.tanh %sg : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
      %hs = tdsl.hardswish %th : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
      %mp = tdsl.max_pool2d %hs {kernel = array<i64: 2, 2>, padding = array<i64: 0, 0>, stride = array<i64: 2, 2>} : tensor<?x8x4x4xf32> -> tensor<?x8x2x2xf32>
      %ap = tdsl.avg_pool2d %mp {kernel = array<i64: 2, 2>, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : tensor<?x8x2x2xf32> -> tensor<?x8x3x3xf32>
      %aa = tdsl.adaptive_avg_pool2d %ap {output_size = array<i64: 1, 1>} : tensor<?x8x3x3xf32> -> tensor<?x8x1x1xf32>
      %fl = tdsl.flatten %aa {end_dim = -1 : i64, start_dim = 1 : i64} : tensor<?x8x1x1xf32> -> tensor<?x8xf32>
      %ln = tdsl.layer_norm %fl, %g, %b {eps = 1.000000e-05 : f64} : (tensor<?x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
      %us = tdsl.unsqueeze %fl {dim = 1 : i64} : tensor<?x8xf32> -> tensor<?x1x8xf32>
      %sq = tdsl.squeeze %us {dim = 1 : i64} : tensor<?x1x8xf32> -> tensor<?x8xf32>
      %rs = tdsl.reshape %sq {shape = array<i64: -1, 8>} : tensor<?x8xf32> -> tensor<?x8xf32>
      %dr = tdsl.dropout %rs {p = 0.000000e+00 : f64} : tensor<?x8xf32> -> tensor<?x8xf32>
      %sm = tdsl.softmax %dr {dim = -1 : i64} : tensor<?x8xf32> -> tensor<?x8xf32>
      %li = tdsl.linear %sm, %t : (tensor<?x8xf32>, tensor<8x8xi2>) -> tensor<?x8xf32>
      %v81 = tdsl.reshape %var {shape = array<i64: 8, 1>} : tensor<8xf32> -> tensor<8x1xf32>
      %mm = tdsl.matmul %li, %v81 : (tensor<?x8xf32>, tensor<8x1xf32>) -> tensor<*xf32>
      %tm = tdsl.ternary_matmul %li, %t : (tensor<?x8xf32>, tensor<8x8xi2>) -> tensor<?x8xf32>
      %k = tdsl.constant dense<[1, 0, -1, 1, 0, -1, 1, 0]> : tensor<8xi2>
      %kf = tdsl.constant dense<2.500000e-01> : tensor<8xf32>
      %ad = tdsl.add %tm, %kf : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
      %su = tdsl.sub %ad, %g : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
      %mu = tdsl.mul %su, %g : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
      %dv = tdsl.div %mu, %g : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
      tdsl.return %dv, %li : tensor<?x8xf32>, tensor<?x8xf32> {names = ["y", "z"]}
    }
  }
  tdsl.layer @Net layer "Net" params {} {
    tdsl.instance @"0" = @Block
    tdsl.forward (%x: tensor<?x8x4x4xf32>) -> tensor<?x8xf32> {
      %y, %y_1 = tdsl.call @"0"(%x) : (tensor<?x8x4x4xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) loc("net.tdsl":12:7)
      tdsl.return %y : tensor<?x8xf32>
    }
  }
}

// CHECK:      builtin.module attributes {tdsl.entry = @Net} {
// CHECK-NEXT: tdsl.layer @Block layer "Block" params {c = 8 : i64, act = "relu", scale = 5.000000e-01 : f64, flags = [true, false], bias = true} {
// CHECK-NEXT: tdsl.param @w : tensor<8x8x3x3xf32> {init = "kaiming_uniform", kind = "param", init_args = {fan_in = 72 : i64}}
// CHECK-NEXT: tdsl.param @t : tensor<8x8xi2> {init = "random_ternary", kind = "param", precision = "ternary"}
// CHECK-NEXT: tdsl.param @mean : tensor<8xf32> {init = "zeros", kind = "buffer"}
// CHECK-NEXT: tdsl.param @var : tensor<8xf32> {init = "ones", kind = "buffer"}
// CHECK-NEXT: tdsl.param @g : tensor<8xf32> {init = "ones", kind = "param"}
// CHECK-NEXT: tdsl.param @b : tensor<8xf32> {init = "zeros", kind = "param"}
// CHECK-NEXT: tdsl.forward (%x: tensor<?x8x4x4xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) attributes {arg_names = ["x"]} {
// CHECK-NEXT: %w = tdsl.get_param @w : tensor<8x8x3x3xf32>
// CHECK-NEXT: %t = tdsl.get_param @t : tensor<8x8xi2>
// CHECK-NEXT: %mean = tdsl.get_param @mean : tensor<8xf32>
// CHECK-NEXT: %var = tdsl.get_param @var : tensor<8xf32>
// CHECK-NEXT: %g = tdsl.get_param @g : tensor<8xf32>
// CHECK-NEXT: %b = tdsl.get_param @b : tensor<8xf32>
// CHECK-NEXT: %c = tdsl.conv2d %x, %w, %b {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x8x4x4xf32>, tensor<8x8x3x3xf32>, tensor<8xf32>) -> tensor<?x8x4x4xf32>
// CHECK-NEXT: %c2 = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 0, 0>, stride = array<i64: 1, 1>} : (tensor<?x8x4x4xf32>, tensor<8x8x3x3xf32>) -> tensor<*xf32>
// CHECK-NEXT: %bn = tdsl.batch_norm %c, %mean, %var, %g, %b {eps = 1.000000e-05 : f64, momentum = 1.000000e-01 : f64} : (tensor<?x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x4x4xf32>
// CHECK-NEXT: %r = tdsl.relu %bn : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
// CHECK-NEXT: %r6 = tdsl.relu6 %r : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
// CHECK-NEXT: %ge = tdsl.gelu %r6 : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
// CHECK-NEXT: %sg = tdsl.sigmoid %ge : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
// CHECK-NEXT: %th = tdsl.tanh %sg : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
// CHECK-NEXT: %hs = tdsl.hardswish %th : tensor<?x8x4x4xf32> -> tensor<?x8x4x4xf32>
// CHECK-NEXT: %mp = tdsl.max_pool2d %hs {kernel = array<i64: 2, 2>, padding = array<i64: 0, 0>, stride = array<i64: 2, 2>} : tensor<?x8x4x4xf32> -> tensor<?x8x2x2xf32>
// CHECK-NEXT: %ap = tdsl.avg_pool2d %mp {kernel = array<i64: 2, 2>, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : tensor<?x8x2x2xf32> -> tensor<?x8x3x3xf32>
// CHECK-NEXT: %aa = tdsl.adaptive_avg_pool2d %ap {output_size = array<i64: 1, 1>} : tensor<?x8x3x3xf32> -> tensor<?x8x1x1xf32>
// CHECK-NEXT: %fl = tdsl.flatten %aa {end_dim = -1 : i64, start_dim = 1 : i64} : tensor<?x8x1x1xf32> -> tensor<?x8xf32>
// CHECK-NEXT: %ln = tdsl.layer_norm %fl, %g, %b {eps = 1.000000e-05 : f64} : (tensor<?x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %us = tdsl.unsqueeze %fl {dim = 1 : i64} : tensor<?x8xf32> -> tensor<?x1x8xf32>
// CHECK-NEXT: %sq = tdsl.squeeze %us {dim = 1 : i64} : tensor<?x1x8xf32> -> tensor<?x8xf32>
// CHECK-NEXT: %rs = tdsl.reshape %sq {shape = array<i64: -1, 8>} : tensor<?x8xf32> -> tensor<?x8xf32>
// CHECK-NEXT: %dr = tdsl.dropout %rs {p = 0.000000e+00 : f64} : tensor<?x8xf32> -> tensor<?x8xf32>
// CHECK-NEXT: %sm = tdsl.softmax %dr {dim = -1 : i64} : tensor<?x8xf32> -> tensor<?x8xf32>
// CHECK-NEXT: %li = tdsl.linear %sm, %t : (tensor<?x8xf32>, tensor<8x8xi2>) -> tensor<?x8xf32>
// CHECK-NEXT: %v81 = tdsl.reshape %var {shape = array<i64: 8, 1>} : tensor<8xf32> -> tensor<8x1xf32>
// CHECK-NEXT: %mm = tdsl.matmul %li, %v81 : (tensor<?x8xf32>, tensor<8x1xf32>) -> tensor<*xf32>
// CHECK-NEXT: %tm = tdsl.ternary_matmul %li, %t : (tensor<?x8xf32>, tensor<8x8xi2>) -> tensor<?x8xf32>
// CHECK-NEXT: %k = tdsl.constant dense<[1, 0, -1, 1, 0, -1, 1, 0]> : tensor<8xi2>
// CHECK-NEXT: %kf = tdsl.constant dense<2.500000e-01> : tensor<8xf32>
// CHECK-NEXT: %ad = tdsl.add %tm, %kf : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %su = tdsl.sub %ad, %g : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %mu = tdsl.mul %su, %g : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %dv = tdsl.div %mu, %g : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: tdsl.return %dv, %li : tensor<?x8xf32>, tensor<?x8xf32> {names = ["y", "z"]}
// CHECK-NEXT: }
// CHECK-NEXT: }
// CHECK-NEXT: tdsl.layer @Net layer "Net" params {} {
// CHECK-NEXT: tdsl.instance @"0" = @Block
// CHECK-NEXT: tdsl.forward (%x: tensor<?x8x4x4xf32>) -> tensor<?x8xf32> {
// CHECK-NEXT: %y, %y_1 = tdsl.call @"0"(%x) : (tensor<?x8x4x4xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>)
// CHECK-NEXT: tdsl.return %y : tensor<?x8xf32>
// CHECK-NEXT: }
// CHECK-NEXT: }
// CHECK-NEXT: }

// GENERIC:      "tdsl.layer"() <{sym_name = "Block", layer = "Block", params = {c = 8 : i64
// GENERIC:      "tdsl.param"() <{sym_name = "w", type = tensor<8x8x3x3xf32>, init = "kaiming_uniform", kind = "param", init_args = {fan_in = 72 : i64}}> : () -> ()
// GENERIC:      "tdsl.forward"() <{function_type = (tensor<?x8x4x4xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>), arg_names = ["x"]}> ({
// GENERIC-NEXT: ^bb0(%x: tensor<?x8x4x4xf32>):
// GENERIC:      "tdsl.conv2d"(%x, %w, %b) <{dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>}>
// GENERIC:      "tdsl.constant"() <{value = dense<[1, 0, -1, 1, 0, -1, 1, 0]> : tensor<8xi2>}> : () -> tensor<8xi2>
// GENERIC:      "tdsl.return"(%dv, %li) <{names = ["y", "z"]}>
// GENERIC:      "tdsl.instance"() <{sym_name = "0", callee = @Block}> : () -> ()
// GENERIC:      }) {tdsl.entry = @Net} : () -> ()

// LOC:      tdsl.param @w : tensor<8x8x3x3xf32> {init = "kaiming_uniform", kind = "param", init_args = {fan_in = 72 : i64}} loc(unknown)
// LOC:      tdsl.forward (%x: tensor<?x8x4x4xf32> loc(unknown)) -> (tensor<?x8xf32>, tensor<?x8xf32>) attributes {arg_names = ["x"]} {
// LOC:      %c = tdsl.conv2d {{.*}} loc("net.tdsl":5:9)
// LOC:      tdsl.call @"0"(%x) {{.*}} loc("net.tdsl":12:7)

// MLIR:      tdsl.layer @Block layer "Block"
// MLIR:      tdsl.conv2d %{{.*}}, %{{.*}}, %{{.*}} {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x8x4x4xf32>, tensor<8x8x3x3xf32>, tensor<8xf32>) -> tensor<?x8x4x4xf32>
// MLIR:      tdsl.constant dense<[1, 0, -1, 1, 0, -1, 1, 0]> : tensor<8xi2>
// MLIR:      tdsl.call @"0"(%{{.*}}) : (tensor<?x8x4x4xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>)
