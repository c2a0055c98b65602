// RUN: tdsl-opt %s -p precision | filecheck %s
// RUN: tdsl-opt %s -p 'precision{default=int8 override="fc3.*=fp32 fc*=fp16"}' | filecheck %s --check-prefix=OVR

// Every weight gets the default; one specialisation serves all three fc instances.
// CHECK-LABEL: tdsl.layer @Lin layer "Linear"
// CHECK:       tdsl.param @weight : tensor<8x8xf32> {init = "kaiming_uniform", kind = "param", precision = "fp16"}
// CHECK:       tdsl.linear
// CHECK-LABEL: tdsl.layer @Net layer "Net"
// CHECK:       tdsl.param @w : {{.*}} precision = "fp16"
// CHECK:       tdsl.instance @fc3 = @Lin
// CHECK-NOT:   tern.

// OVR-LABEL:   tdsl.layer @Lin layer "Linear"
// OVR:         precision = "fp16"
// OVR-LABEL:   tdsl.layer @Linear_1 layer "Linear"
// OVR:         precision = "fp32"
// OVR-LABEL:   tdsl.layer @Net layer "Net"
// OVR:         tdsl.param @w : {{.*}} precision = "int8"
// OVR:         tdsl.instance @fc2 = @Lin
// OVR-NEXT:    tdsl.instance @fc3 = @Linear_1
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
