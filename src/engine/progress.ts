/** Long work reports through this; the CLI renders it, library users may ignore it. */
export interface ProgressEvent {
  task: string;
  /** Short phase name, e.g. "unpack", "compile". */
  phase: string;
  done?: number;
  total?: number;
  detail?: string;
}

export type OnProgress = (event: ProgressEvent) => void;
