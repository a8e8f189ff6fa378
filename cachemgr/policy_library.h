// The policy library's public API: everything code outside cachemgr/ may use to run eviction policies
// in its own process -- the worker's InProcessPolicyClient, eval, cross-component tests -- without a cache
// manager. It is the cache manager's own engine, exposed deliberately:
//   - cachemgr::SessionManager (session_manager.h): open a session with a PolicySpec and a BudgetSpec,
//     step it with scores (kv::ScoreDType values), get kv::EvictionDecisions back; thread-safe.
//   - cachemgr::CpuScoreStore (cpu_score_store.h): the score store a SessionManager runs on.
//   - cachemgr::PolicyRegistry (registry.h): the built-in policies by name (builtin_policies.h: their
//     defaults).
//   - policy_proto.h: PolicySpec and BudgetSpec from and to their a2sf.v1 messages.
// Everything else under cachemgr/ (store internals, kernels, the service's conversions) is visible
// only inside cachemgr/ (and bench/): Bazel's visibility enforces the seam (cachemgr/BUILD). The
// decision and score types are the contract's (common/kv), shared with the remote path.
#ifndef A2SF_CACHEMGR_POLICY_LIBRARY_H_
#define A2SF_CACHEMGR_POLICY_LIBRARY_H_

#include "cachemgr/policy/builtin_policies.h"
#include "cachemgr/policy/registry.h"
#include "cachemgr/policy_proto.h"
#include "cachemgr/session/session_manager.h"
#include "cachemgr/store/cpu_score_store.h"

#endif  // A2SF_CACHEMGR_POLICY_LIBRARY_H_
