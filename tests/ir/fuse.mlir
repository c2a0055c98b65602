// RUN: tdsl-opt %s -p fuse --print-debuginfo | filecheck %s
// RUN: tdsl-opt %s -p 'fuse{fold-bn=false}' | filecheck %s --check-prefix=NOBN
// RUN: tdsl-opt %s -p 'fuse{epilogue=false}' | filecheck %s --check-prefix=NOEPI
// RUN: tdsl-opt %s -p fuse --emit generic | tdsl-opt | filecheck %s --check-prefix=RT

// CHECK-LABEL: tdsl.layer @conv_bn layer
// CHECK:       %[[W:.*]] = tdsl.get_param @w
// CHECK-NEXT:  %[[C:.*]] = tdsl.get_param @c
// CHECK-NEXT:  %[[Y:.*]] = kern.conv2d %x, %[[W]] bn(%[[C]], %[[C]], %[[C]], %[[C]]) {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, activation = "none", precision = "fp32", eps = 1.000000e-05 : f64} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":1:9)
// CHECK-NEXT:  tdsl.return %[[Y]]

// CHECK-LABEL: tdsl.layer @conv_bn_relu layer
// CHECK:       %[[Y:.*]] = kern.conv2d %x, %{{.*}} bn({{.*}}) {{{.*}}activation = "relu"{{.*}}} : {{.*}} loc("net.tdsl":2:9)
// CHECK-NEXT:  tdsl.return %[[Y]]

// CHECK-LABEL: tdsl.layer @conv_bn_add_relu layer
// CHECK:       %[[Y:.*]] = kern.conv2d %x, %{{.*}} bn({{.*}}) residual %s {{{.*}}activation = "relu"{{.*}}} : {{.*}} loc("net.tdsl":3:9)
// CHECK-NEXT:  tdsl.return %[[Y]]

// CHECK-LABEL: tdsl.layer @residual_on_the_left layer
// CHECK:       %[[Y:.*]] = kern.conv2d %x, %{{.*}} bn({{.*}}) residual %s {{{.*}}activation = "none"{{.*}}} : {{.*}} loc("net.tdsl":4:9)
// CHECK-NEXT:  tdsl.return %[[Y]]

// CHECK-LABEL: tdsl.layer @linear_relu layer
// CHECK:       %[[W:.*]] = tdsl.get_param @w
// CHECK-NEXT:  %[[C:.*]] = tdsl.get_param @c
// CHECK-NEXT:  %[[Y:.*]] = kern.linear %x, %[[W]] bias %[[C]] {activation = "relu", precision = "fp16"} : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<?x4xf32> loc("net.tdsl":5:9)
// CHECK-NEXT:  tdsl.return %[[Y]]

// The conv result is also returned: no bn fold, nothing after it fused.
// CHECK-LABEL: tdsl.layer @two_users layer
// CHECK:       %[[Y:.*]] = kern.conv2d %x, %{{[^ ]*}} {{{.*}}activation = "none"{{.*}}} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":6:9)
// CHECK-NEXT:  %[[B:.*]] = tdsl.batch_norm %[[Y]]
// CHECK-NEXT:  %[[R:.*]] = tdsl.relu %[[B]]
// CHECK-NEXT:  %[[A:.*]] = tdsl.add %[[R]], %[[B]]
// CHECK-NEXT:  tdsl.return %[[Y]], %[[A]]

// The bn result is also returned: the bn folds, the relu stays.
// CHECK-LABEL: tdsl.layer @bn_result_two_users layer
// CHECK:       %[[B:.*]] = kern.conv2d %x, %{{.*}} bn({{.*}}) {{{.*}}activation = "none"{{.*}}} : {{.*}} loc("net.tdsl":8:9)
// CHECK-NEXT:  %[[R:.*]] = tdsl.relu %[[B]]
// CHECK-NEXT:  tdsl.return %[[B]], %[[R]]

// CHECK-LABEL: tdsl.layer @packed_conv layer
// CHECK:       %[[P:.*]] = tern.get_packed @w
// CHECK-NEXT:  %[[S:.*]] = tdsl.get_param @w_scale
// CHECK-NEXT:  %[[C:.*]] = tdsl.get_param @c
// CHECK-NEXT:  %[[Y:.*]] = kern.conv2d %x, %[[P]] scale %[[S]] bn(%[[C]], %[[C]], %[[C]], %[[C]]) {{{.*}}activation = "relu6", precision = "ternary", eps = 1.000000e-05 : f64, format = "2bit"} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":7:9)
// CHECK-NEXT:  tdsl.return %[[Y]]
// CHECK-NOT:   tdsl.batch_norm

// NOBN-LABEL:  tdsl.layer @conv_bn_add_relu layer
// NOBN:        %[[Y:.*]] = kern.conv2d %x, %{{[^ ]*}} {{{.*}}activation = "none"{{.*}}}
// NOBN-NEXT:   %[[B:.*]] = tdsl.batch_norm %[[Y]]
// NOBN-NEXT:   %[[A:.*]] = tdsl.add %[[B]], %s
// NOBN-NEXT:   tdsl.relu %[[A]]
// NOBN-LABEL:  tdsl.layer @linear_relu layer
// NOBN:        kern.linear {{.*}}activation = "relu"

// NOEPI-LABEL: tdsl.layer @conv_bn_add_relu layer
// NOEPI:       %[[Y:.*]] = kern.conv2d %x, %{{.*}} bn({{.*}}) {{{.*}}activation = "none"{{.*}}}
// NOEPI-NEXT:  %[[A:.*]] = tdsl.add %[[Y]], %s
// NOEPI-NEXT:  tdsl.relu %[[A]]

// RT-LABEL:    tdsl.layer @packed_conv layer
// RT:          kern.conv2d %x, %{{.*}} scale %{{.*}} bn({{.*}}) {{.*}}format = "2bit"

builtin.module {
  tdsl.layer @conv_bn layer "T" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.param @c : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x4x8x8xf32>) -> tensor<?x8x8x8xf32> {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32>
      %c = tdsl.get_param @c : tensor<8xf32>
      %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":1:9)
      %b = tdsl.batch_norm %y, %c, %c, %c, %c {eps = 1.000000e-05 : f64, momentum = 1.000000e-01 : f64} : (tensor<?x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
      tdsl.return %b : tensor<?x8x8x8xf32>
    }
  }
  tdsl.layer @conv_bn_relu layer "T" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.param @c : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x4x8x8xf32>) -> tensor<?x8x8x8xf32> {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32>
      %c = tdsl.get_param @c : tensor<8xf32>
      %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":2:9)
      %b = tdsl.batch_norm %y, %c, %c, %c, %c {eps = 1.000000e-05 : f64, momentum = 1.000000e-01 : f64} : (tensor<?x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
      %r = tdsl.relu %b : tensor<?x8x8x8xf32> -> tensor<?x8x8x8xf32>
      tdsl.return %r : tensor<?x8x8x8xf32>
    }
  }
  tdsl.layer @conv_bn_add_relu layer "T" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.param @c : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x4x8x8xf32>, %s: tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32> {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32>
      %c = tdsl.get_param @c : tensor<8xf32>
      %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":3:9)
      %b = tdsl.batch_norm %y, %c, %c, %c, %c {eps = 1.000000e-05 : f64, momentum = 1.000000e-01 : f64} : (tensor<?x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
      %a = tdsl.add %b, %s : (tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32>
      %r = tdsl.relu %a : tensor<?x8x8x8xf32> -> tensor<?x8x8x8xf32>
      tdsl.return %r : tensor<?x8x8x8xf32>
    }
  }
  tdsl.layer @residual_on_the_left layer "T" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.param @c : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x4x8x8xf32>, %s: tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32> {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32>
      %c = tdsl.get_param @c : tensor<8xf32>
      %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":4:9)
      %b = tdsl.batch_norm %y, %c, %c, %c, %c {eps = 1.000000e-05 : f64, momentum = 1.000000e-01 : f64} : (tensor<?x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
      %a = tdsl.add %s, %b : (tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32>
      tdsl.return %a : tensor<?x8x8x8xf32>
    }
  }
  tdsl.layer @linear_relu layer "T" params {} {
    tdsl.param @w : tensor<4x8xf32> {init = "kaiming_uniform", kind = "param", precision = "fp16"}
    tdsl.param @c : tensor<4xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x4xf32> {
      %w = tdsl.get_param @w : tensor<4x8xf32>
      %c = tdsl.get_param @c : tensor<4xf32>
      %y = tdsl.linear %x, %w, %c : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<?x4xf32> loc("net.tdsl":5:9)
      %r = tdsl.relu %y : tensor<?x4xf32> -> tensor<?x4xf32>
      tdsl.return %r : tensor<?x4xf32>
    }
  }
  tdsl.layer @two_users layer "T" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.param @c : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x4x8x8xf32>) -> (tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>) {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32>
      %c = tdsl.get_param @c : tensor<8xf32>
      %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":6:9)
      %b = tdsl.batch_norm %y, %c, %c, %c, %c {eps = 1.000000e-05 : f64, momentum = 1.000000e-01 : f64} : (tensor<?x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
      %r = tdsl.relu %b : tensor<?x8x8x8xf32> -> tensor<?x8x8x8xf32>
      %a = tdsl.add %r, %b : (tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>) -> tensor<?x8x8x8xf32>
      tdsl.return %y, %a : tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>
    }
  }
  tdsl.layer @bn_result_two_users layer "T" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.param @c : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x4x8x8xf32>) -> (tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>) {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32>
      %c = tdsl.get_param @c : tensor<8xf32>
      %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":8:9)
      %b = tdsl.batch_norm %y, %c, %c, %c, %c {eps = 1.000000e-05 : f64, momentum = 1.000000e-01 : f64} : (tensor<?x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
      %r = tdsl.relu %b : tensor<?x8x8x8xf32> -> tensor<?x8x8x8xf32>
      tdsl.return %b, %r : tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>
    }
  }
  tdsl.layer @packed_conv layer "T" params {} {
    tern.packed_param @w : !tern.packed<8x4x3x3, "2bit"> {kind = "param"}
    tdsl.param @w_scale : tensor<8xf32> {init = "ones", kind = "buffer"}
    tdsl.param @c : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x4x8x8xf32>) -> tensor<?x8x8x8xf32> {
      %p = tern.get_packed @w : !tern.packed<8x4x3x3, "2bit">
      %s = tdsl.get_param @w_scale : tensor<8xf32>
      %c = tdsl.get_param @c : tensor<8xf32>
      %y = tern.packed_conv2d %x, %p, %s {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":7:9)
      %b = tdsl.batch_norm %y, %c, %c, %c, %c {eps = 1.000000e-05 : f64, momentum = 1.000000e-01 : f64} : (tensor<?x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
      %r = tdsl.relu6 %b : tensor<?x8x8x8xf32> -> tensor<?x8x8x8xf32>
      tdsl.return %r : tensor<?x8x8x8xf32>
    }
  }
}
