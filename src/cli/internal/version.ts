/** The tools' version and names (a module with no imports: the argument-error path loads nothing heavy). */
export const VERSION = "0.1.0"

export type ToolName = "pub" | "sub" | "passwd"
