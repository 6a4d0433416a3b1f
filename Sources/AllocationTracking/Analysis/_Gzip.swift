import CZlib
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// gzip (RFC 1952) through the system zlib: pprof profiles are gzip-compressed protobuf on disk and over HTTP.
enum _Gzip {
    /// `bytes` as one gzip member (default compression level).
    ///
    /// - Throws: `.invalidArgument` when zlib refuses (it can only run out of memory here).
    static func compress(_ bytes: [UInt8]) throws -> Data {
        var stream = z_stream()
        // windowBits 15 + 16: a gzip header and trailer instead of zlib's; memLevel 8 is zlib's default.
        var status = deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY,
                                   ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else { throw failure("deflateInit2", status, stream) }
        defer { deflateEnd(&stream) }
        // deflateBound covers the gzip wrapper set up above: one call with Z_FINISH normally does it all; the
        // loop only guards against a bound that is ever too small.
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))) + 64)
        var produced = 0
        status = bytes.withUnsafeBufferPointer { input -> Int32 in
            // zlib does not write through next_in; its declaration predates const.
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = uInt(input.count)
            while true {
                if produced == output.count { output.append(contentsOf: repeatElement(0, count: output.count)) }
                let status = output.withUnsafeMutableBufferPointer { buffer -> Int32 in
                    stream.next_out = buffer.baseAddress! + produced
                    stream.avail_out = uInt(buffer.count - produced)
                    let status = deflate(&stream, Z_FINISH)
                    produced = buffer.count - Int(stream.avail_out)
                    return status
                }
                // Anything but "the output is full" (Z_OK or Z_BUF_ERROR with no room left) ends the loop.
                if status == Z_STREAM_END || stream.avail_out != 0 || (status != Z_OK && status != Z_BUF_ERROR) {
                    return status
                }
            }
        }
        guard status == Z_STREAM_END else { throw failure("deflate", status, stream) }
        return Data(output.prefix(produced))
    }

    private static func failure(_ call: String, _ status: Int32, _ stream: z_stream) -> AllocationTrackingError {
        let message = stream.msg.map { String(cString: $0) } ?? (status == Z_MEM_ERROR ? "out of memory" : "status \(status)")
        return AllocationTrackingError(.invalidArgument, "cannot gzip the profile: zlib's \(call) failed: \(message)")
    }
}
