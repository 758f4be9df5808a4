// The reference MoE router (kernels/ref), shared by the ref and cpu backends' tables.
#pragma once

#include "kernels/ops.h"

namespace dsi {

// See MoeRouteArgs. Per token: scores = softmax or sigmoid of the logits (double); experts ranked by the
// method's choice scores; ties go to the lower expert (and group) index, as torch.topk does on CPU; the k chosen
// experts are written in descending choice-score order.
void ref_moe_route(const MoeRouteArgs& args);

}  // namespace dsi
