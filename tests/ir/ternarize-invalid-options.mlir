// RUN: not tdsl-opt %s -p 'ternarize{threshold=foo}' 2>&1 | filecheck %s --check-prefix=THRESHOLD
// RUN: not tdsl-opt %s -p 'ternarize{policy=some}' 2>&1 | filecheck %s --check-prefix=POLICY
// RUN: not tdsl-opt %s -p 'ternarize{delta=0.0}' 2>&1 | filecheck %s --check-prefix=DELTA
// RUN: not tdsl-opt %s -p 'ternarize{sparsity=1.0}' 2>&1 | filecheck %s --check-prefix=SPARSITY
// RUN: not tdsl-opt %s -p 'ternarize{keep=ternary}' 2>&1 | filecheck %s --check-prefix=KEEP
// RUN: not tdsl-opt %s -p 'ternarize{override="conv1"}' 2>&1 | filecheck %s --check-prefix=OVRSYNTAX
// RUN: not tdsl-opt %s -p 'ternarize{override="conv1=fp8"}' 2>&1 | filecheck %s --check-prefix=OVRPREC
// RUN: not tdsl-opt %s -p 'ternarize{bogus=1}' 2>&1 | filecheck %s --check-prefix=BOGUS
// RUN: not tdsl-opt %s -p 'precision{default=ternary}' 2>&1 | filecheck %s --check-prefix=PDEFAULT
// RUN: not tdsl-opt %s -p 'precision{override="w=ternary"}' 2>&1 | filecheck %s --check-prefix=POVR

// THRESHOLD: error: ternarize: threshold must be one of twn, absmean, fixed, sparsity, got 'foo'
// POLICY: error: ternarize: policy must be one of default, all, none, b158, got 'some'
// DELTA: error: ternarize: delta must be > 0, got 0.0
// SPARSITY: error: ternarize: sparsity must be in [0, 1), got 1.0
// KEEP: error: ternarize: keep must be one of fp32, fp16, int8, got 'ternary'
// OVRSYNTAX: error: ternarize: override entries must be glob=precision, got 'conv1'
// OVRPREC: error: ternarize: override 'conv1=fp8': precision must be one of fp32, fp16, int8, ternary, got 'fp8'
// BOGUS: Provided arguments ["bogus"] not found
// PDEFAULT: error: precision: default must be one of fp32, fp16, int8, got 'ternary'
// POVR: error: precision: override 'w=ternary': precision must be one of fp32, fp16, int8, got 'ternary'
builtin.module attributes {tdsl.entry = @Net} {
  tdsl.layer @Lin layer "Linear" params {} {
    tdsl.param @weight : tensor<8x8xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.param @bias : tensor<8xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      %w = tdsl.get_param @weight : tensor<8x8xf32>
      %b = tdsl.get_param @bias : tensor<8xf32>
      %y = tdsl.linear %x, %w, %b : (tensor<?x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<?x8xf32> loc("net.tdsl":3:9)
      tdsl.return %y : tensor<?x8xf32>
    }
  }
  tdsl.layer @Net layer "Net" params {} {
    tdsl.param @w : tensor<8x4x3x3xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.instance @fc1 = @Lin
    tdsl.instance @fc2 = @Lin
    tdsl.instance @fc3 = @Lin
    tdsl.forward (%x: tensor<?x4x8x8xf32>, %v: tensor<?x8xf32>) -> (tensor<?x8x8x8xf32>, tensor<?x8xf32>) {
      %w = tdsl.get_param @w : tensor<8x4x3x3xf32>
      %c = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<?x8x8x8xf32> loc("net.tdsl":9:7)
      %a = tdsl.call @fc1(%v) : (tensor<?x8xf32>) -> tensor<?x8xf32>
      %b = tdsl.call @fc2(%a) : (tensor<?x8xf32>) -> tensor<?x8xf32>
      %d = tdsl.call @fc3(%b) : (tensor<?x8xf32>) -> tensor<?x8xf32>
      tdsl.return %c, %d : tensor<?x8x8x8xf32>, tensor<?x8xf32>
    }
  }
}
