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
export type { BranchMode } from './engine/snapshot/branch.js';
export type { EvalResult } from './engine/agent/guest.js';
export { StartedVm, type StartVmOptions, type StoppedVm } from './engine/vmm/vm.js';
export type { ExecOptions, ExecResult, RestoredInfo } from './engine/agent/guest.js';
export { AgentError } from './engine/agent/client.js';
export type { AccelVerdict } from './engine/accel.js';
export type { BaseImage } from './engine/images/base.js';
export { runDoctor, type DoctorReport, type Check, type CheckStatus } from './cli/doctor.js';
export { StatePaths, stateDir } from './common/state-dir.js';
export { ForkdError, errorMessage, type ErrorCode } from './errors.js';
export type { ProgressEvent, OnProgress } from './engine/progress.js';
export { Daemon, type DaemonOptions, type DaemonEndpoint } from './server/daemon.js';
export { Controller, Sandbox, type ControllerOptions } from './client/controller.js';
export type {
  BranchReply,
  EvalReply,
  PendingSnapshot,
  SandboxInfo,
  SnapshotSummary,
  SnapshotDetail,
} from './api/types.js';
