/**
 * Mosquitto's rules for the strings of a packet (`mosquitto_validate_utf8`, lib/utf8_mosq.c, which
 * `packet__read_string` applies to every string it reads): beyond well-formed UTF-8 without U+0000
 * (the codec's own check, [MQTT-1.5.3-1] [MQTT-1.5.3-2]), no control characters (U+0001–U+001F,
 * U+007F–U+009F) and no non-characters (U+FDD0–U+FDEF, and U+xFFFE / U+xFFFF in every plane).
 * MQTT says a string SHOULD NOT hold them and a receiver MAY close the connection
 * [MQTT-1.5.3-2] (v5 §1.5.4); Mosquitto closes it ("Malformed UTF-8"), and so does Midge.
 */

/** Does the decoded string hold a code point Mosquitto refuses (a control character or a non-character)? */
export const hasForbiddenCodePoint = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || (c >= 0xfdd0 && c <= 0xfdef) || c >= 0xfffe) return true
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const low = s.charCodeAt(i + 1)
      if (low >= 0xdc00 && low <= 0xdfff) {
        i++
        // U+xFFFE / U+xFFFF of planes 1-16: the low surrogate is DFFE / DFFF and the plane's last
        if ((low & 0xfffe) === 0xdffe && (c & 0x3f) === 0x3f) return true
      }
    }
  }
  return false
}
