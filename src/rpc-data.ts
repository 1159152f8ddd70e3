/**
 * JSON-RPC frames whose bulk is one base64 string in `params.data`
 * (tunnel/write, tunnel/data, process/write, process/output): built as text
 * around the base64, and parsed without running JSON.parse over the base64.
 * Pure; shared by the app-server and the client library. The wire format is
 * unchanged: these are ordinary JSON texts.
 */

/** Frames shorter than this are parsed the ordinary way (the scan would not pay off). */
export const FAST_PARSE_MIN_CHARS = 8 * 1024;
/** The frame without its data string must be at most this long, or the frame is parsed the ordinary way. */
export const FAST_PARSE_REST_MAX_CHARS = 4 * 1024;

const DATA_KEY = '"data":"';
/** What ends a JSON string body that has no escapes: a quote, or anything JSON.parse would reject or unescape. */
const STRING_STOP = /["\\\u0000-\u001f]/g;
/** Two different stand-ins: only a value that becomes each of them in turn can be the data string itself. */
const STAND_INS = ["berth:data:1", "berth:data:2"] as const;

/**
 * Text of the notification `{"jsonrpc":"2.0","method":method,"params":{...params,"data":base64}}`,
 * built around the base64 (which needs no escaping) instead of stringifying
 * an object that holds it. `params` must not have a `data` key.
 */
export function dataNotificationText(method: string, params: Record<string, unknown>, base64: string): string {
  const head = JSON.stringify(params);
  const fields = head.length > 2 ? `${head.slice(0, -1)},` : "{";
  return `{"jsonrpc":"2.0","method":${JSON.stringify(method)},"params":${fields}"data":"${base64}"}}`;
}

/** Text of the request `{"jsonrpc":"2.0","id":id,"method":method,"params":{...params,"data":base64}}`, built the same way. */
export function dataRequestText(id: number | string, method: string, params: Record<string, unknown>, base64: string): string {
  const head = JSON.stringify(params);
  const fields = head.length > 2 ? `${head.slice(0, -1)},` : "{";
  return `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"method":${JSON.stringify(method)},"params":${fields}"data":"${base64}"}}`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `text` parsed with the stand-in in place of the data string; undefined if that is not JSON or the stand-in is not params.data. */
function parseWithStandIn(prefix: string, suffix: string, standIn: string): Record<string, unknown> | undefined {
  let message: unknown;
  try {
    message = JSON.parse(`${prefix}"${standIn}"${suffix}`);
  } catch {
    return undefined;
  }
  return isRecord(message) && isRecord(message.params) && message.params.data === standIn ? message : undefined;
}

/**
 * The fast path: exactly what `JSON.parse(text)` returns, for a frame whose
 * `params.data` is the first `"data":"` string in it, has no escapes, and
 * leaves at most FAST_PARSE_REST_MAX_CHARS around it; otherwise undefined
 * (the caller parses the ordinary way, errors included).
 *
 * Why it is exact: the text up to the data string is the same in both
 * parses, so the lexer reaches the string's opening quote in the same state;
 * the string body holds no quote, backslash or control character, so the
 * string ends at the first quote and the rest lexes the same too. The two
 * texts thus differ only in that one string's value. It is parsed twice with
 * two different stand-ins: when params.data is each stand-in in turn, the
 * value JSON.parse keeps there (the last of duplicate keys) is that string,
 * not another value that happens to equal a stand-in.
 */
export function parseDataFrame(text: string): Record<string, unknown> | undefined {
  if (text.length < FAST_PARSE_MIN_CHARS) return undefined;
  const key = text.indexOf(DATA_KEY);
  if (key < 0) return undefined;
  const start = key + DATA_KEY.length;
  STRING_STOP.lastIndex = start;
  const stop = STRING_STOP.exec(text);
  if (!stop || stop[0] !== '"') return undefined;
  const end = stop.index;
  if (text.length - (end - start) > FAST_PARSE_REST_MAX_CHARS) return undefined;
  const prefix = text.slice(0, start - 1);
  const suffix = text.slice(end + 1);
  const message = parseWithStandIn(prefix, suffix, STAND_INS[0]);
  if (!message || !parseWithStandIn(prefix, suffix, STAND_INS[1])) return undefined;
  (message.params as Record<string, unknown>).data = text.slice(start, end);
  return message;
}

/** `JSON.parse(text)`, through the fast path when it applies; throws as JSON.parse does. */
export function parseRpcText(text: string): unknown {
  return parseDataFrame(text) ?? JSON.parse(text);
}

/**
 * A base64 decoder (the same as `Buffer.from(text, "base64")`) that writes
 * into one buffer, reused by its next call: the bytes are valid until then,
 * so a caller copies what it keeps. Saves an allocation the size of the data
 * per frame where the bytes go straight into a socket.
 */
export function reusableBase64Decoder(): (text: string) => Uint8Array {
  let scratch = Buffer.allocUnsafe(0);
  return (text) => {
    const most = Math.ceil((text.length * 3) / 4);
    if (scratch.length < most) scratch = Buffer.allocUnsafe(most);
    return scratch.subarray(0, scratch.write(text, 0, "base64"));
  };
}
