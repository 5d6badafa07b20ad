export {
  Engine,
  type BootOptions,
  type BranchResult,
  type SnapshotDescription,
  type SnapshotOptions,
  type EngineOptions,
} from './engine/engine.js';
export { Hub, openEngine, type InstallOptions, type Pulled } from './hub/hub.js';
export type { OfficialPacks, OfficialGuest, OfficialLookup, GuestImages } from './engine/images/official.js';
export { StartedVm, type StartVmOptions, type StoppedVm } from './engine/vmm/vm.js';
export type { RestoredInfo } from './engine/agent/guest.js';
export { AgentError } from './engine/agent/client.js';
export type { AccelVerdict } from './engine/accel.js';
export type { BaseImage } from './engine/images/base.js';
export { runDoctor, type DoctorReport, type Check, type CheckStatus } from './cli/doctor.js';
export { StatePaths, stateDir } from './common/state-dir.js';
export { ForkdError, errorMessage, type ErrorCode } from './errors.js';
export type { ProgressEvent, OnProgress } from './engine/progress.js';
export { Daemon, type DaemonOptions, type DaemonEndpoint } from './server/daemon.js';
export {
  Controller,
  Sandbox,
  type ControllerOptions,
  type CreateSnapshotOptions,
  type SandboxOptions,
} from './client/controller.js';
export type {
  BranchMode,
  BranchReply,
  EvalReply,
  EvalResult,
  ExecOptions,
  ExecResult,
  HeartbeatReply,
  Lease,
  Owner,
  OwnerRemovedReply,
  PendingSnapshot,
  PoolState,
  SandboxInfo,
  SnapshotSummary,
  SnapshotDetail,
} from './api/types.js';
export { openApiDocument } from './api/openapi.js';
