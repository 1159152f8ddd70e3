/**
 * The one place params are checked. Each checker takes the raw value and the
 * param's name and either returns the typed value or throws
 * ApiError(-32602) whose message names the param.
 */
import { isAbsolute } from "node:path";
import { reusableBase64Decoder } from "../../rpc-data.ts";
import { API_INVALID_PARAMS, ApiError } from "./types.ts";

export type Check<T> = (value: unknown, name: string) => T;

function invalid(name: string, expected: string): ApiError {
  return new ApiError(API_INVALID_PARAMS, `invalid params: ${name} must be ${expected}`);
}

export const str: Check<string> = (v, name) => {
  if (typeof v !== "string") throw invalid(name, "a string");
  return v;
};

export const nonEmptyStr: Check<string> = (v, name) => {
  if (typeof v !== "string" || v === "") throw invalid(name, "a non-empty string");
  return v;
};

/** An id chosen by a client: 1 to `maxChars` of A-Z a-z 0-9 . _ - (it is kept, so it is bounded). */
export function token(maxChars: number): Check<string> {
  const shape = new RegExp(`^[A-Za-z0-9._-]{1,${maxChars}}$`);
  return (v, name) => {
    if (typeof v !== "string" || !shape.test(v)) throw invalid(name, `1 to ${maxChars} characters of A-Z a-z 0-9 . _ -`);
    return v;
  };
}

export const bool: Check<boolean> = (v, name) => {
  if (typeof v !== "boolean") throw invalid(name, "a boolean");
  return v;
};

/** A whole number in [min, max]. */
export function int(min = 0, max = Number.MAX_SAFE_INTEGER): Check<number> {
  return (v, name) => {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) throw invalid(name, `an integer from ${min} to ${max}`);
    return v;
  };
}

/** An absolute path with no NUL byte. */
export const absPath: Check<string> = (v, name) => {
  if (typeof v !== "string" || v === "" || v.includes("\0") || !isAbsolute(v)) throw invalid(name, "an absolute path");
  return v;
};

/**
 * Base64 (standard alphabet, padding optional) decoded to bytes. Checked by
 * length instead of a regex (5× faster on tunnel-sized data): the decoder
 * skips anything outside its alphabet, so a bad character means fewer bytes
 * than the length promises; only the URL-safe `-`/`_` it also accepts need a look.
 */
export const base64: Check<Uint8Array> = (v, name) => checkedBase64(v, name, (text) => Buffer.from(text, "base64"));

/** Its buffer grows to the largest data seen: at most a frame's worth, 768 KiB. */
const decodeTransient = reusableBase64Decoder();

/**
 * base64, by the same rules, decoded into one buffer reused by the next
 * base64Transient check: the bytes are valid only until the handler first
 * awaits, and a handler must copy what it keeps. For tunnel/write, whose
 * bytes usually go straight into a socket: a 512 KiB allocation less per call.
 */
export const base64Transient: Check<Uint8Array> = (v, name) => checkedBase64(v, name, decodeTransient);

function checkedBase64(v: unknown, name: string, decode: (text: string) => Uint8Array): Uint8Array {
  if (typeof v !== "string") throw invalid(name, "base64 data");
  let core = v.length;
  while (core > 0 && v.charCodeAt(core - 1) === 61 /* = */) core--;
  const bytes = decode(v);
  if (v.length - core > 2 || core % 4 === 1 || bytes.length !== Math.floor((core * 3) / 4) || v.includes("-") || v.includes("_")) {
    throw invalid(name, "base64 data");
  }
  return bytes;
}

export function oneOf<T extends string>(values: readonly T[]): Check<T> {
  return (v, name) => {
    if (typeof v !== "string" || !values.includes(v as T)) throw invalid(name, `one of ${values.join(", ")}`);
    return v as T;
  };
}

export function arrayOf<T>(item: Check<T>, opts: { min?: number; max?: number } = {}): Check<T[]> {
  return (v, name) => {
    const min = opts.min ?? 0;
    const max = opts.max ?? 10_000;
    if (!Array.isArray(v) || v.length < min || v.length > max) throw invalid(name, `an array of ${min} to ${max} items`);
    return v.map((entry, i) => item(entry, `${name}[${i}]`));
  };
}

/** A JSON object whose values all pass `value` (e.g. env). */
export function recordOf<T>(value: Check<T>, opts: { maxKeys?: number } = {}): Check<Record<string, T>> {
  return (v, name) => {
    if (!isPlainObject(v)) throw invalid(name, "an object");
    const keys = Object.keys(v);
    if (keys.length > (opts.maxKeys ?? 10_000)) throw invalid(name, `an object of at most ${opts.maxKeys} keys`);
    const out: Record<string, T> = {};
    for (const key of keys) out[key] = value(v[key], `${name}.${key}`);
    return out;
  };
}

type Shape = Record<string, Check<unknown>>;
type Out<S extends Shape> = { [K in keyof S]: ReturnType<S[K]> };

/** A nested object of known fields (unknown fields are ignored). */
export function object<S extends Shape>(shape: S): Check<Out<S>> {
  return (v, name) => {
    if (!isPlainObject(v)) throw invalid(name === "" ? "params" : name, "an object");
    const out: Record<string, unknown> = {};
    for (const [key, check] of Object.entries(shape)) {
      const value = check(v[key], name === "" ? key : `${name}.${key}`);
      if (value !== undefined) out[key] = value;
    }
    return out as Out<S>;
  };
}

/** Absent (undefined) passes as undefined; anything else must pass `check`. */
export function optional<T>(check: Check<T>): Check<T | undefined> {
  return (v, name) => (v === undefined ? undefined : check(v, name));
}

/** The params of a method: a missing params member counts as `{}`. */
export function params<S extends Shape>(shape: S): (raw: unknown) => Out<S> {
  const check = object(shape);
  return (raw) => check(raw === undefined ? {} : raw, "");
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
