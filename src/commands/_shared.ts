import type { ArgsDef } from "citty";

export const remoteControlArgs = {
  "remote-control": { type: "boolean", description: "Also serve the API over TCP behind a bearer token" },
} as const satisfies ArgsDef;
