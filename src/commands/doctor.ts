import { defineCommand, describe } from "./_shared.ts";
import { openContext } from "../daemon/context.ts";
import { doctor } from "../daemon/doctor.ts";

export default defineCommand({
  meta: {
    name: "doctor",
    description: describe({
      summary: "Check the install end to end; each problem comes with the command that fixes it (exit 0 either way)",
      example: "berth doctor",
      env: ["BERTH_HOME", "BERTH_INSTALL_DIR", "BERTH_RELEASE_BASE_URL", "HOME", "SHELL", "USER"],
      output: '{"status":"ok"|"problems","findings":[{"check","ok","message","fix?"}]}',
    }),
  },
  run: () => doctor(openContext()),
});
