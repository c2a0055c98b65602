// RUN: tdsl-opt %s --split-input-file --verify-diagnostics

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' batch-norm operands bn_mean, bn_var, bn_weight, bn_bias must be given all or none, but got only bn_mean, bn_var}}
  %y = "kern.conv2d"(%x, %w, %c, %c) <{activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, eps = 1.0e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 0, 0, 1, 1, 0, 0, 0>, precision = "fp32"}> : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' has batch-norm operands but no eps}}
  %y = kern.conv2d %x, %w bn(%c, %c, %c, %c) {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "fp32"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' has eps but no batch-norm operands}}
  %y = kern.conv2d %x, %w {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, eps = 1.0e-05 : f64, precision = "fp32"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' eps must be > 0, but got 0.0}}
  %y = kern.conv2d %x, %w bn(%c, %c, %c, %c) {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, eps = 0.0 : f64, precision = "fp32"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error-re @+1 {{'kern.conv2d' activation must be one of none, relu, relu6, hardswish{{.*}}, but got "gelu"}}
  %y = kern.conv2d %x, %w {activation = "gelu", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "fp32"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' precision must be one of fp32, fp16, int8, ternary, but got "bf16"}}
  %y = kern.conv2d %x, %w {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "bf16"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' precision "ternary" does not fit weight type tensor<8x4x3x3xf32> (packed or i2 weights are exactly the ternary ones)}}
  %y = kern.conv2d %x, %w scale %c {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "ternary"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' ternary weight needs a scale operand}}
  %y = kern.conv2d %x, %t {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "ternary"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' scale operand is only for ternary weights, but precision is "int8"}}
  %y = kern.conv2d %x, %w scale %c {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "int8"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' format must be "2bit" (the packed weight's), but got "base3"}}
  %y = kern.conv2d %x, %p scale %c {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, format = "base3", precision = "ternary"} : (tensor<?x4x8x8xf32>, !tern.packed<8x4x3x3, "2bit">, tensor<8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' format is only for packed weights, but the weight is tensor<8x4x3x3xi2>}}
  %y = kern.conv2d %x, %t scale %c {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, format = "2bit", precision = "ternary"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' input must have rank 4 (N, C, H, W), but got rank 2 (tensor<?x8xf32>)}}
  %y = kern.conv2d %v, %w {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "fp32"} : (tensor<?x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' weight must have rank 4 (O, C/groups, kh, kw), but got rank 2 (tensor<8x8xf32>)}}
  %y = kern.conv2d %x, %lw {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "fp32"} : (tensor<?x4x8x8xf32>, tensor<8x8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' bias must have rank 1, but got rank 2 (tensor<8x8xf32>)}}
  %y = kern.conv2d %x, %w bias %lw {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "fp32"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8x8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' scale must have rank 0 or 1, but got rank 2 (tensor<8x8xf32>)}}
  %y = kern.conv2d %x, %t scale %lw {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "ternary"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xi2>, tensor<8x8xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' residual type tensor<?x8x8x4xf32> does not match the result type tensor<?x8x8x8xf32>}}
  %y = kern.conv2d %x, %w residual %r {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "fp32"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<?x8x8x4xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' groups must be >= 1, but got 0}}
  %y = kern.conv2d %x, %w {activation = "none", dilation = array<i64: 1, 1>, groups = 0 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>, precision = "fp32"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.conv2d' stride entries must be >= 1, but got [0, 1]}}
  %y = kern.conv2d %x, %w {activation = "none", dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 0, 1>, precision = "fp32"} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.linear' input must have rank 2 (N, in) with a batch norm, but got rank 3 (tensor<?x3x8xf32>)}}
  %y = kern.linear %v3, %lw bn(%c, %c, %c, %c) {activation = "none", eps = 1.0e-05 : f64, precision = "fp32"} : (tensor<?x3x8xf32>, tensor<8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x3x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{'kern.linear' weight must have rank 2 (out, in), but got rank 4 (tensor<8x4x3x3xf32>)}}
  %y = kern.linear %v, %w {activation = "none", precision = "fp32"} : (tensor<?x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8xf32>
  func.return
}

// -----

func.func @f(%x: tensor<?x4x8x8xf32>, %w: tensor<8x4x3x3xf32>, %t: tensor<8x4x3x3xi2>, %p: !tern.packed<8x4x3x3, "2bit">, %c: tensor<8xf32>, %v: tensor<?x8xf32>, %lw: tensor<8x8xf32>, %r: tensor<?x8x8x4xf32>, %v3: tensor<?x3x8xf32>) {
  // expected-error @+1 {{property 'activation' expected in operation 'kern.linear'}}
  %y = kern.linear %v, %lw {precision = "fp32"} : (tensor<?x8xf32>, tensor<8x8xf32>) -> tensor<?x8xf32>
  func.return
}
