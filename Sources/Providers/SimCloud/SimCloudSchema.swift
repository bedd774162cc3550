import Foundation
import GRDB
import Storage

/// SimCloud's tables. "simcloud.v1" and ".v2" are frozen: a schema change is a new migration.
public enum SimCloudSchema: SchemaContributor {
    public static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("simcloud.v1") { db in
            try db.create(table: "simcloud_image") { t in
                t.column("id", .text).primaryKey()
                t.column("name", .text).notNull()
                t.column("format", .text).notNull()
                t.column("size_bytes", .integer).notNull()
                t.column("sha256", .text).notNull()
                t.column("file", .text).notNull()
                t.column("created_at", .datetime).notNull()
            }
            try db.create(table: "simcloud_instance") { t in
                t.column("id", .text).primaryKey()
                t.column("name", .text).notNull()
                t.column("size_id", .text).notNull()
                t.column("image_id", .text).notNull()
                t.column("raw_state", .text).notNull()
                // A transition in progress: the raw state it reaches at `transition_due`.
                t.column("target_raw_state", .text)
                t.column("transition_due", .datetime)
                t.column("disk_file", .text).notNull()
                t.column("address", .text).notNull()
                t.column("created_at", .datetime).notNull()
            }
        }
        // An image an instance booted from directly (`consumeImage`): the instance's id.
        migrator.registerMigration("simcloud.v2") { db in
            try db.alter(table: "simcloud_image") { t in t.add(column: "consumed_by", .text) }
        }
    }
}

struct SimImageRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "simcloud_image"
    var id: String
    var name: String
    var format: String
    var sizeBytes: Int64
    var sha256: String
    var file: String
    var createdAt: Date
    /// The instance that took this image's file as its disk; the image cannot start others.
    var consumedBy: String? = nil

    enum CodingKeys: String, CodingKey {
        case id, name, format, sizeBytes = "size_bytes", sha256, file, createdAt = "created_at", consumedBy = "consumed_by"
    }
}

struct SimInstanceRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "simcloud_instance"
    var id: String
    var name: String
    var sizeID: String
    var imageID: String
    var rawState: String
    var targetRawState: String?
    var transitionDue: Date?
    var diskFile: String
    var address: String
    var createdAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, sizeID = "size_id", imageID = "image_id", rawState = "raw_state"
        case targetRawState = "target_raw_state", transitionDue = "transition_due", diskFile = "disk_file"
        case address, createdAt = "created_at"
    }
}
