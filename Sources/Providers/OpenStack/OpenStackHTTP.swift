import Foundation

/// Requests to OpenStack's REST services: one place for retries and for turning their error bodies
/// into `ProviderError`s that keep the service's own words.
enum OpenStackHTTP {
    /// Sends `request`, retrying what OpenStack means as "try again": 429 (rate limited), 502/503/504
    /// (a service restarting or overloaded), and 409 when Nova refuses only because a task is still
    /// running on the server (`task_state`). A 409 about the server's settled state (`vm_state`) is
    /// final and is not retried. `Retry-After` is honoured up to the policy's longest delay.
    static func send(
        _ request: HTTPRequest, transport: any HTTPTransport, retry: RetryPolicy, driver: String, verb: Verb, action: String
    ) async throws -> (Data, HTTPResponse) {
        var attempt = 0
        while true {
            attempt += 1
            let data: Data
            let response: HTTPResponse
            do {
                (data, response) = try await transport.send(request)
            } catch let error where HTTPFailure.isCancellation(error) {
                throw ProviderError(driver: driver, verb: verb, code: .cancelled, message: "\(action) cancelled")
            } catch let error as HTTPResponseTooLarge {
                throw ProviderError(driver: driver, verb: verb, code: .backend, message: "\(action): \(error)")
            } catch {
                throw ProviderError(
                    driver: driver, verb: verb, code: .unavailable,
                    message: "\(action): cannot reach \(request.url.absoluteString): \(HTTPFailure.describe(error))")
            }
            if (200..<300).contains(response.statusCode) { return (data, response) }
            let failure = mapError(status: response.statusCode, data: data, driver: driver, verb: verb, action: action)
            if isRetryable(status: response.statusCode, failure: failure) && attempt < retry.maxAttempts {
                var delay = retry.delay(afterAttempt: attempt)
                if let after = response.value(forHTTPHeaderField: "Retry-After").flatMap(Int.init), after >= 0 {
                    delay = min(.seconds(after), retry.maxDelay)
                }
                do { try await Task.sleep(for: delay) } catch {
                    throw ProviderError(driver: driver, verb: verb, code: .cancelled, message: "\(action) cancelled")
                }
                continue
            }
            if attempt > 1 {
                var final = failure
                final.message += " (gave up after \(attempt) attempts)"
                throw final
            }
            throw failure
        }
    }

    static func isRetryable(status: Int, failure: ProviderError) -> Bool {
        switch status {
        case 429, 502, 503, 504: true
        case 409: failure.message.contains("task_state")
        default: false
        }
    }

    /// Nova (`{"itemNotFound": {"code": 404, "message": ...}}`), Keystone (`{"error": {"message": ...}}`),
    /// Neutron (`{"NeutronError": {"type": ..., "message": ...}}`) and Glance (plain text or HTML) errors.
    static func mapError(status: Int, data: Data, driver: String, verb: Verb, action: String) -> ProviderError {
        var backendCode = "HTTP\(status)"
        var message = ""
        if let object = (try? JSONSerialization.jsonObject(with: data.prefix(65536))) as? [String: Any] {
            if object.count == 1, let (key, value) = object.first, let inner = value as? [String: Any] {
                backendCode = (inner["type"] as? String) ?? (key == "error" ? (inner["title"] as? String ?? key) : key)
                message = (inner["message"] as? String) ?? ""
            } else if let text = object["message"] as? String {
                message = text
            }
        }
        if message.isEmpty { message = plainText(data.prefix(2048)) }
        let code: ProviderError.Code
        switch status {
        case 400: code = .invalidInput
        case 401: code = .authentication
        case 403: code = message.localizedCaseInsensitiveContains("quota") ? .capacityExceeded : .forbidden
        case 404: code = .notFound
        case 409: code = .invalidState
        case 413: code = .capacityExceeded  // Nova's `overLimit`: a quota.
        case 429: code = .throttled
        case 501: code = .unsupported
        case 502, 503, 504: code = .unavailable
        default: code = .backend
        }
        return ProviderError(
            driver: driver, verb: verb, code: code, backendCode: backendCode,
            message: "\(action): \(message.isEmpty ? "HTTP \(status)" : message)")
    }

    /// The words of an HTML or text error page (Glance's), tags and extra blank space removed.
    static func plainText(_ data: Data) -> String {
        var text = String(decoding: data, as: UTF8.self)
        while let open = text.range(of: "<"), let close = text.range(of: ">", range: open.upperBound..<text.endIndex) {
            text.replaceSubrange(open.lowerBound..<close.upperBound, with: " ")
        }
        return text.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    /// OpenStack's timestamps: `2026-12-07T06:00:00Z`, `2026-12-07T06:00:00.000000Z`, or without a zone (UTC).
    static func date(_ text: String) -> Date? {
        guard text.count >= 19 else { return nil }
        let formatter = ISO8601DateFormatter()
        return formatter.date(from: String(text.prefix(19)) + "Z")
    }
}
