// RUN: not tdsl-opt %s -p inline 2>&1 | filecheck %s

// CHECK: net.tdsl:4:7: error: inline: tdsl.relu has result type tensor<*xf32>; run shape-infer first

builtin.module attributes {tdsl.entry = @Net} {
  tdsl.layer @Net layer "Net" params {} {
    tdsl.forward (%x: tensor<?x8xf32>) -> tensor<*xf32> {
      %y = tdsl.relu %x : tensor<?x8xf32> -> tensor<*xf32> loc("net.tdsl":4:7)
      tdsl.return %y : tensor<*xf32>
    }
  }
}
