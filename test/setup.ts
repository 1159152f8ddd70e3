// Lifecycle suites wait on real processes (bun's default per-test timeout is 5 s).
import { setDefaultTimeout } from "bun:test";

setDefaultTimeout(120_000);
