import Foundation
import Testing
@testable import Providers

@Suite("SigV4")
struct SigV4Tests {
    @Test("known answer: RunInstances POST to 127.0.0.1:5055")
    func knownAnswer() throws {
        let signer = SigV4Signer(
            credentials: .init(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "secret"), region: "us-east-1", service: "ec2")
        let body = "Action=RunInstances&Version=2016-11-15&ImageId=ami-12c6146b&InstanceType=t2.micro&MinCount=1&MaxCount=1&ClientToken=64f2433d-9a8a-4875-a29d-7f173feb3feb"
        let date = try #require(SigV4Signer.parseAmzDate("20261122T015644Z"))
        let signature = signer.sign(
            method: "POST", url: URL(string: "http://127.0.0.1:5055/")!,
            headers: ["content-type": "application/x-www-form-urlencoded; charset=utf-8", "host": "127.0.0.1:5055"],
            payloadSHA256: SigV4Signer.sha256Hex(Data(body.utf8)), date: date)
        #expect(signature.signedHeaders == "content-type;host;x-amz-date")
        #expect(signature.signature == "db58a78d11e1f4faac2387a2ebd2650f2249d213b6124c6251068cf309b7caf2")
        #expect(signature.authorization.hasPrefix("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/us-east-1/ec2/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="))
    }

    @Test("request signing produces the same signature as the known answer")
    func requestSigning() throws {
        let signer = SigV4Signer(
            credentials: .init(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "secret"), region: "us-east-1", service: "ec2")
        let body = Data("Action=RunInstances&Version=2016-11-15&ImageId=ami-12c6146b&InstanceType=t2.micro&MinCount=1&MaxCount=1&ClientToken=64f2433d-9a8a-4875-a29d-7f173feb3feb".utf8)
        var request = HTTPRequest(url: URL(string: "http://127.0.0.1:5055/")!, method: "POST", body: body)
        request.setValue("application/x-www-form-urlencoded; charset=utf-8", forHTTPHeaderField: "Content-Type")
        signer.sign(&request, date: try #require(SigV4Signer.parseAmzDate("20261122T015644Z")))
        #expect(request.value(forHTTPHeaderField: "Authorization")?.hasSuffix("Signature=db58a78d11e1f4faac2387a2ebd2650f2249d213b6124c6251068cf309b7caf2") == true)
        #expect(request.value(forHTTPHeaderField: "x-amz-date") == "20261122T015644Z")
    }

    @Test("canonical query sorts and encodes; S3 paths are encoded once")
    func canonicalForms() {
        let url = URL(string: "http://h/bucket/a%20b.txt?uploadId=x%2By&partNumber=2&uploads")!
        #expect(SigV4Signer.canonicalQuery(url) == "partNumber=2&uploadId=x%2By&uploads=")
        #expect(SigV4Signer.canonicalPath(url, service: "s3") == "/bucket/a%20b.txt")
        #expect(SigV4Signer.canonicalPath(url, service: "ec2") == "/bucket/a%2520b.txt")
        #expect(SigV4Signer.uriEncode("a b/~") == "a%20b%2F~")
    }
}
