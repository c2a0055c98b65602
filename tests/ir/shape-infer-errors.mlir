// RUN: tdsl-opt %s --split-input-file --verify-diagnostics -p shape-infer
// RUN: not tdsl-opt %s --split-input-file -p shape-infer 2>&1 | filecheck %s --check-prefix=FIRST

// FIRST: shape-infer-errors.mlir:12:7: error: linear: input has 512 features but weight expects 256 (weight is 1000x256)
// FIRST-NOT: Traceback
builtin.module attributes {tdsl.entry = @Head} {
  tdsl.layer @Head layer "Head" params {} {
    tdsl.param @w : tensor<1000x256xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x512xf32>) -> tensor<*xf32> {
      %w = tdsl.get_param @w : tensor<1000x256xf32>
      // expected-error @+1 {{linear: input has 512 features but weight expects 256 (weight is 1000x256)}}
      %y = tdsl.linear %x, %w : (tensor<?x512xf32>, tensor<1000x256xf32>) -> tensor<*xf32>
      tdsl.return %y : tensor<*xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @C} {
  tdsl.layer @C layer "C" params {} {
    tdsl.param @w : tensor<64x64x3x3xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x32x8x8xf32>) -> tensor<*xf32> {
      %w = tdsl.get_param @w : tensor<64x64x3x3xf32>
      // expected-error @+1 {{conv2d: input has 32 channels but weight expects 64 (weight is 64x64x3x3, groups=1)}}
      %y = tdsl.conv2d %x, %w {dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>} : (tensor<?x32x8x8xf32>, tensor<64x64x3x3xf32>) -> tensor<*xf32>
      tdsl.return %y : tensor<*xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @Net} {
  tdsl.layer @BasicBlock layer "BasicBlock" params {} {
    tdsl.forward (%x: tensor<?x64x?x?xf32>) -> tensor<*xf32> {
      %r = tdsl.relu %x : tensor<?x64x?x?xf32> -> tensor<*xf32>
      tdsl.return %r : tensor<*xf32>
    }
  }
  tdsl.layer @Seq layer "Sequential" params {} {
    tdsl.instance @"0" = @BasicBlock
    tdsl.forward (%x: tensor<*xf32>) -> tensor<*xf32> {
      // expected-error @+1 {{argument 1 of layer 'BasicBlock' (instance 'layer1.0') expects tensor<?x64x?x?xf32> but got tensor<?x32x56x56xf32>}}
      %y = tdsl.call @"0"(%x) : (tensor<*xf32>) -> tensor<*xf32>
      tdsl.return %y : tensor<*xf32>
    }
  }
  tdsl.layer @Net layer "Net" params {} {
    tdsl.instance @layer1 = @Seq
    tdsl.forward (%x: tensor<?x32x56x56xf32>) -> tensor<*xf32> {
      %y = tdsl.call @layer1(%x) : (tensor<?x32x56x56xf32>) -> tensor<*xf32>
      tdsl.return %y : tensor<*xf32>
    }
  }
}

// -----
builtin.module attributes {tdsl.entry = @A} {
  tdsl.layer @A layer "A" params {} {
    tdsl.forward (%x: tensor<?x4xf32>, %y: tensor<5xf32>) -> tensor<*xf32> {
      // expected-error @+1 {{add: cannot broadcast operands of shapes ?x4 and 5 (dim -1: 4 vs 5)}}
      %z = tdsl.add %x, %y : (tensor<?x4xf32>, tensor<5xf32>) -> tensor<*xf32>
      tdsl.return %z : tensor<*xf32>
    }
  }
}

// -----
// expected-error @+1 {{shape-infer: module has no `tdsl.entry` symbol reference attribute}}
builtin.module {
  tdsl.layer @A layer "A" params {} {
    tdsl.forward (%x: tensor<4xf32>) -> tensor<4xf32> {
      tdsl.return %x : tensor<4xf32>
    }
  }
}
