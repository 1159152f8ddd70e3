import { defineCommand } from "citty";
import { openContext } from "../daemon/context.ts";
import { doctor } from "../daemon/doctor.ts";

export default defineCommand({
  meta: {
    name: "doctor",
    description:
      "Check the install end to end; each problem comes with the command that fixes it (exit 0 either way)\n\n" +
      "Example: berth doctor\n" +
      "Environment: BERTH_HOME, BERTH_INSTALL_DIR, BERTH_RELEASE_BASE_URL, HOME, SHELL, USER\n" +
      'Output: {"status":"ok"|"problems","findings":[{"check","ok","message","fix?"}]}',
  },
  run: () => doctor(openContext()),
});
