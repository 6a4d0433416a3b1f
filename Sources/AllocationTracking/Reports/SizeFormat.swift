/// A byte count the way tracemalloc prints it: `66 B`, `1023 B`, `10239 B`, `10.0 KiB`, `100 KiB`, `1.5 MiB`.
///
/// Python's `_format_size`: walk the units B, KiB, MiB, GiB, TiB; past B, a value under 100 gets one decimal;
/// a value under 10 240 (or any value in TiB) gets none; otherwise divide by 1024 and try the next unit.
/// `sign` prints `+` for zero and positive values (diffs). Rounding is printf's: half to even.
func _formatSize(_ size: Double, sign: Bool = false) -> String {
    var value = size
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if abs(value) < 100 && unit != "B" { return _fixed(value, decimals: 1, sign: sign) + " " + unit }
        if abs(value) < 10 * 1024 || unit == "TiB" { return _fixed(value, decimals: 0, sign: sign) + " " + unit }
        value /= 1024
    }
    fatalError("unreachable")
}

func _formatSize(_ size: Int, sign: Bool = false) -> String { _formatSize(Double(size), sign: sign) }

/// `%.Nf` / `%+.Nf` for N = 0 or 1, rounded as glibc's printf (and Python) round: the exact binary value to
/// the nearest, a tie to even.
func _fixed(_ value: Double, decimals: Int, sign: Bool) -> String {
    let scale = decimals == 1 ? 10.0 : 1.0
    let magnitude = abs(value)
    var scaled = magnitude * scale
    // The product can round onto a half that the exact value is not on (10.35 is stored as 10.3499999…, and
    // 10.3499999… * 10 rounds to 103.5): printf prints "10.3". The product's rounding error, exact with a
    // fused multiply-add, says which way the exact value lies.
    let error = (-scaled).addingProduct(magnitude, scale)
    if error != 0, scaled - scaled.rounded(.down) == 0.5 {
        scaled = error > 0 ? scaled.rounded(.up) : scaled.rounded(.down)
    } else {
        scaled = scaled.rounded(.toNearestOrEven)
    }
    let negative = value.sign == .minus  // printf prints "-0.0" for a small negative value, as Python does
    var digits = String(UInt64(scaled))
    if decimals == 1 {
        if digits.count < 2 { digits = String(repeating: "0", count: 2 - digits.count) + digits }
        digits.insert(".", at: digits.index(before: digits.endIndex))
    }
    if negative { return "-" + digits }
    return sign ? "+" + digits : digits
}

/// `12.5%`: a share with one decimal, as every report prints it (0.0% of nothing).
func _percent(_ part: Int, of whole: Int) -> String {
    guard whole > 0 else { return "0.0%" }
    return _fixed(Double(part) * 100 / Double(whole), decimals: 1, sign: false) + "%"
}
