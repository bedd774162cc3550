import Foundation
import Testing
@testable import Providers

/// A guest migrated into this cloud may use only the files prepared for it: the source's
/// hypervisor wrote its domain XML, and a hostile source could name any file of this host.
@Suite struct LiveArrivalTests {
    let disk = "/var/lib/intercloud/instances/web-1a2b.qcow2"
    let log = "/var/lib/intercloud/instances/web.console.log"

    func domain(_ devices: String) -> String {
        "<domain type='qemu'><name>web</name><uuid>3f9c</uuid><devices>\(devices)</devices></domain>"
    }

    var preparedDisk: String {
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='\(disk)'/><backingStore/><target dev='vda' bus='virtio'/></disk>"
    }
    var preparedSerial: String { "<serial type='file'><source path='\(log)'/><target port='0'/></serial><console type='file'><source path='\(log)'/></console>" }

    func problems(_ devices: String) -> [String] {
        LibvirtDriver.arrivalProblems(xml: domain(devices), preparedDisk: disk, preparedConsoleLog: log)
    }

    @Test func theDomainAsPreparedIsAccepted() {
        #expect(problems(preparedDisk + preparedSerial) == [])
    }

    @Test func anyOtherFileOrDeviceIsRefused() {
        let shadow = "<disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vdb'/></disk>"
        #expect(!problems(preparedDisk + shadow + preparedSerial).isEmpty)  // a second disk: a host file
        #expect(!problems(shadow.replacingOccurrences(of: "vdb", with: "vda") + preparedSerial).isEmpty)  // the disk swapped
        #expect(!problems("<disk type='block' device='disk'><source dev='/dev/sda'/><target dev='vda'/></disk>" + preparedSerial).isEmpty)
        #expect(!problems("<disk type='network' device='disk'><source protocol='nbd' name='x'><host name='10.0.0.1'/></source><target dev='vda'/></disk>").isEmpty)
        let withBacking = "<disk type='file' device='disk'><source file='\(disk)'/><backingStore type='file'><source file='/etc/passwd'/></backingStore><target dev='vda'/></disk>"
        #expect(!problems(withBacking + preparedSerial).isEmpty)
        #expect(!problems(preparedDisk + "<serial type='file'><source path='/root/.ssh/authorized_keys'/></serial>").isEmpty)
        #expect(!problems(preparedDisk + "<filesystem type='mount'><source dir='/'/><target dir='root'/></filesystem>").isEmpty)
        #expect(!problems(preparedDisk + "<disk type='file' device='cdrom'><source file='/etc/hosts'/><target dev='hdc'/></disk>").isEmpty)
        #expect(LibvirtDriver.arrivalProblems(xml: "not xml", preparedDisk: disk, preparedConsoleLog: log) == ["unreadable domain XML"])
        // A log file behind the prepared source, a network console, another kernel.
        #expect(!problems(preparedDisk + "<serial type='file'><source path='\(log)'/><log file='/etc/cron.d/x' append='on'/></serial>").isEmpty)
        #expect(!problems(preparedDisk + "<serial type='tcp'><source mode='connect' host='10.0.0.9' service='22'/></serial>").isEmpty)
        #expect(!problems(preparedDisk + "<channel type='unix'><source mode='bind' path='/run/x.sock'/></channel>").isEmpty)
        let kernel = "<domain type='qemu'><os><kernel>/etc/shadow</kernel></os><devices>\(preparedDisk)</devices></domain>"
        #expect(!LibvirtDriver.arrivalProblems(xml: kernel, preparedDisk: disk, preparedConsoleLog: log, bootFiles: ["/boot/vmlinuz"]).isEmpty)
        let ownKernel = "<domain type='qemu'><os><kernel>/boot/vmlinuz</kernel></os><devices>\(preparedDisk)</devices></domain>"
        #expect(LibvirtDriver.arrivalProblems(xml: ownKernel, preparedDisk: disk, preparedConsoleLog: log, bootFiles: ["/boot/vmlinuz"]).isEmpty)
    }
}
