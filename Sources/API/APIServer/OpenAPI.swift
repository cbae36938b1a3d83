import Foundation
import KubeAPI

/// `/openapi/v2`: a document with no definitions. kubectl fetches it (as protobuf) to validate
/// what `create -f` and `apply -f` send; a kind it finds no schema for is not validated on the
/// client, and this server validates every write itself (422 Invalid with causes).
enum OpenAPI {
    static let protobufType = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

    /// gnostic's `openapi_v2.Document`: swagger (1), info (2: title 1, version 2), paths (8),
    /// definitions (9), each a length-delimited field.
    static let document: Data = {
        func field(_ number: UInt8, _ bytes: [UInt8]) -> [UInt8] { [number << 3 | 2, UInt8(bytes.count)] + bytes }
        let info = field(1, Array("Kubernetes".utf8)) + field(2, Array("v1.33.0".utf8))
        return Data(field(1, Array("2.0".utf8)) + field(2, info) + field(8, []) + field(9, []))
    }()

    static func v2(accept: String?) -> APIResponse {
        if accept?.contains("protobuf") == true { return APIResponse(code: 200, body: .bytes(document, type: protobufType)) }
        return APIResponse(code: 200, body: .json(["swagger": "2.0", "info": ["title": "Kubernetes", "version": "v1.33.0"], "paths": [:], "definitions": [:]]))
    }
}
