import Testing
import XMPP

@Suite struct DebugLogRedactionTests {
    @Test func saslExchangesAreNeverPrinted() {
        let lines = [
            "SENT: <auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">AGJyb2tlcgBzM2NyZXQ=</auth>",
            "RECV: <challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1meWtvK2QybGJiRmdPTlJ2OXFreGRhd0wzcmZjTkhZSlkxWlZ2V1ZzN2oscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5Ng==</challenge>",
            "SENT: <response xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">Yz1iaXdzLHI9Znlr...</response>",
        ]
        for line in lines {
            let printed = DebugLogRedaction.redact(line)
            #expect(printed.hasPrefix("[SASL or credential data redacted"), "\(printed)")
            #expect(!printed.contains("AGJyb2tlcg") && !printed.contains("cj1m") && !printed.contains("Yz1i"))
        }
        // Other stanzas are printed as they are.
        let presence = "SENT: <presence><c xmlns='http://jabber.org/protocol/caps' ver='x'/></presence>"
        #expect(DebugLogRedaction.redact(presence) == presence)
    }
}
