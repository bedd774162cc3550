import Testing
@testable import Metering
