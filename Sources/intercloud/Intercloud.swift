import ArgumentParser

@main
struct Intercloud: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "intercloud",
        abstract: "A broker that lets independent clouds peer with each other over XMPP.")
}
