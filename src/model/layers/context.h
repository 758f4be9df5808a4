// What every layer's forward needs: the op backend and the communicator of its tensor-parallel group.
#pragma once

#include "kernels/ops.h"
#include "parallel/communicator.h"

namespace dsi {

struct LayerContext {
  const Ops& ops;
  Communicator& comm;
};

}  // namespace dsi
