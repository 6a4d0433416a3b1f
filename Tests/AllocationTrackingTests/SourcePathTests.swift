@testable import AllocationTracking
import Foundation
import Testing

/// One path style for every frame: a file is one key whether the debug information recorded it relative or
/// absolute.
@Suite struct SourcePathTests {
    @Test func aCheckoutIsOneKeyRelativeOrAbsolute() {
        let relative = _sourcePath(".build/checkouts/swift-nio/Sources/NIOCore/ByteBuffer-core.swift",
                                   currentDirectory: "/", packageRoot: nil)
        let absolute = _sourcePath("/src/app/.build/checkouts/swift-nio/Sources/NIOCore/ByteBuffer-core.swift",
                                   currentDirectory: "/", packageRoot: nil)
        let underCurrent = _sourcePath("/src/app/.build/checkouts/swift-nio/Sources/NIOCore/ByteBuffer-core.swift",
                                       currentDirectory: "/src/app", packageRoot: "/src/app")
        #expect(relative == ".build/checkouts/swift-nio/Sources/NIOCore/ByteBuffer-core.swift")
        #expect(absolute == relative)
        #expect(underCurrent == relative)
    }

    @Test func theCurrentDirectoryThenThePackageRootThenAbsolute() {
        #expect(_sourcePath("/src/app/Sources/App/main.swift", currentDirectory: "/src/app", packageRoot: nil)
                == "Sources/App/main.swift")
        #expect(_sourcePath("/src/app/Sources/App/main.swift", currentDirectory: "/", packageRoot: "/src/app")
                == "Sources/App/main.swift")
        #expect(_sourcePath("/usr/include/stdlib.h", currentDirectory: "/src/app", packageRoot: "/src/app")
                == "/usr/include/stdlib.h")
        // A directory that only shares a prefix is not a parent.
        #expect(_sourcePath("/src/application/a.swift", currentDirectory: "/src/app", packageRoot: nil)
                == "/src/application/a.swift")
        // `.`, `..` and doubled slashes fold, relative or absolute.
        #expect(_sourcePath("/src/app/Sources/../Sources/./App//main.swift", currentDirectory: "/", packageRoot: nil)
                == "/src/app/Sources/App/main.swift")
        #expect(_sourcePath("./Sources/App/main.swift", currentDirectory: "/", packageRoot: nil) == "Sources/App/main.swift")
    }

    /// `<compiler-generated>` and `<stdin>` (a unit compiled from standard input) are not files: the symbolicator
    /// joins them to the compilation directory (`/<compiler-generated>`); a frame shows its function and image.
    @Test func pseudoFilesKeepTheirBareNameAndShowTheFunction() {
        #expect(_sourcePath("/<compiler-generated>") == "<compiler-generated>")
        #expect(_sourcePath("/build/dir/<stdin>") == "<stdin>")
        #expect(_sourcePath("<stdin>") == "<stdin>")
        #expect(Frame(function: "thunk for f()", file: "<stdin>", image: "App").description == "thunk for f() in App")
        #expect(Frame(function: "thunk for f()", file: "<compiler-generated>").description == "thunk for f()")
        #expect(Frame(file: "<stdin>", line: 3).description == "<stdin>:3")
    }
}
