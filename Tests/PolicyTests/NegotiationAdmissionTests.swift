import Policy
import Testing

/// Peers hold a bounded share of the negotiations open with us as provider.
@Suite struct NegotiationAdmissionTests {
    @Test func eachPeerHasItsShareUnderTheGlobalBound() {
        let admission = NegotiationAdmission(maxOpenPerPeer: 2, maxOpen: 3)
        #expect(admission.admit(openWithPeer: 0, openInAll: 0) == nil)
        #expect(admission.admit(openWithPeer: 1, openInAll: 1) == nil)
        #expect(admission.admit(openWithPeer: 2, openInAll: 2) == .peer(limit: 2))
        // Another peer still gets in while the first holds its share, until the global bound.
        #expect(admission.admit(openWithPeer: 0, openInAll: 2) == nil)
        #expect(admission.admit(openWithPeer: 0, openInAll: 3) == .global(limit: 3))
        #expect("\(NegotiationAdmission.Refusal.peer(limit: 2))" == "2 negotiations with this peer are already open")
    }

    @Test func boundsAreAtLeastOneAndThePeerShareFitsTheGlobalBound() {
        let admission = NegotiationAdmission(maxOpenPerPeer: 50, maxOpen: 0)
        #expect(admission.maxOpen == 1)
        #expect(admission.maxOpenPerPeer == 1)
        #expect(NegotiationAdmission().maxOpenPerPeer == NegotiationAdmission.defaultMaxOpenPerPeer)
    }
}
