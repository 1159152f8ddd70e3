import type { ArgsDef } from "citty";

export const remoteControlArgs = {
  "remote-control": { type: "boolean", description: "Also serve the API over TCP behind a bearer token" },
} as const satisfies ArgsDef;

/** `--help` that teaches: what it does, one example, the environment it reads, and what its JSON looks like. */
export function describe(parts: { summary: string; example: string; env: string[]; output: string }): string {
  return `${parts.summary}\n\nExample: ${parts.example}\nEnvironment: ${parts.env.join(", ")}\nOutput (one JSON line on stdout): ${parts.output}\n`;
}
