import Foundation
import Policy
import Testing
@testable import Metering

@Suite struct BillRendererTests {
    static func small() throws -> Bill {
        let usage = record(types: [
            InstanceTypeUsage(instanceType: "m1.small", instances: 2, runningSeconds: 36_000),
            InstanceTypeUsage(instanceType: "m1.large", instances: 1, runningSeconds: 3_600),
        ])
        return try Bill(provider: provider, consumer: consumer, period: period(0, 24 * hour), rates: rates, records: [usage])
    }

    @Test func table() throws {
        // 10 h × 0.023 = 0.23; 1 h × 0.092 = 0.092 → 0.09; 12.5 GB × 0.02 = 0.25;
        // 100 GB-hours / 730 = 0.13699 GB-month × 0.04 = 0.0055 → 0.01.
        #expect(BillRenderer.table(try Self.small()) == """
            Provider  broker@cloud2.example
            Consumer  broker@cloud1.example
            Period    2026-06-01T00:00:00Z to 2026-06-02T00:00:00Z
            Currency  EUR
            Records   a1 #1  2026-06-01T00:00:00Z to 2026-06-02T00:00:00Z

            Item           Instances  Quantity  Unit               Rate  Amount
            m1.large               1    1.0000  hour         0.092/hour    0.09
            m1.small               2   10.0000  hour         0.023/hour    0.23
            Data transfer              12.5000  GB              0.02/GB    0.25
            Storage                     0.1370  GB-month  0.04/GB-month    0.01
            -------------------------------------------------------------------
            Total (EUR)                                                    0.58

            """)
    }

    @Test func csv() throws {
        let text = BillRenderer.csv(try Self.small())
        #expect(text.hasSuffix("\r\n"))
        #expect(text.components(separatedBy: "\r\n") == [
            "provider,consumer,period_from,period_until,currency,item,instance_type,instances,quantity,unit,rate,amount",
            "broker@cloud2.example,broker@cloud1.example,2026-06-01T00:00:00Z,2026-06-02T00:00:00Z,EUR,m1.large,m1.large,1,1,hour,0.092,0.09",
            "broker@cloud2.example,broker@cloud1.example,2026-06-01T00:00:00Z,2026-06-02T00:00:00Z,EUR,m1.small,m1.small,2,10,hour,0.023,0.23",
            "broker@cloud2.example,broker@cloud1.example,2026-06-01T00:00:00Z,2026-06-02T00:00:00Z,EUR,Data transfer,,,12.5,GB,0.02,0.25",
            "broker@cloud2.example,broker@cloud1.example,2026-06-01T00:00:00Z,2026-06-02T00:00:00Z,EUR,Storage,,,0.137,GB-month,0.04,0.01",
            "broker@cloud2.example,broker@cloud1.example,2026-06-01T00:00:00Z,2026-06-02T00:00:00Z,EUR,Total,,,,,,0.58",
        ] + [""])
    }

    @Test func csvQuotesPerRFC4180() throws {
        #expect(BillRenderer.csvField("plain") == "plain")
        #expect(BillRenderer.csvField("a,b") == "\"a,b\"")
        #expect(BillRenderer.csvField("say \"hi\"") == "\"say \"\"hi\"\"\"")
        #expect(BillRenderer.csvField("two\nlines") == "\"two\nlines\"")
        let odd = record(types: [InstanceTypeUsage(instanceType: "gpu \"x\",large", instances: 1, runningSeconds: 3600)])
        let card = RateCard(currency: "EUR", instanceHour: ["gpu \"x\",large": 1], perGBTransferred: 0)
        let bill = try Bill(provider: provider, consumer: consumer, period: period(0, 24 * hour), rates: card, records: [odd])
        let rows = BillRenderer.csv(bill).components(separatedBy: "\r\n")
        #expect(rows[1].hasSuffix(",EUR,\"gpu \"\"x\"\",large\",\"gpu \"\"x\"\",large\",1,1,hour,1,1.00"))
    }

    @Test func json() throws {
        let text = BillRenderer.json(try Self.small())
        #expect(text == """
            {
              "consumer" : "broker@cloud1.example",
              "currency" : "EUR",
              "lines" : [
                {
                  "amount" : "0.09",
                  "base_quantity" : "3600",
                  "base_unit" : "seconds",
                  "instance_type" : "m1.large",
                  "instances" : 1,
                  "item" : "m1.large",
                  "kind" : "compute",
                  "quantity" : "1",
                  "rate" : "0.092",
                  "unit" : "hour"
                },
                {
                  "amount" : "0.23",
                  "base_quantity" : "36000",
                  "base_unit" : "seconds",
                  "instance_type" : "m1.small",
                  "instances" : 2,
                  "item" : "m1.small",
                  "kind" : "compute",
                  "quantity" : "10",
                  "rate" : "0.023",
                  "unit" : "hour"
                },
                {
                  "amount" : "0.25",
                  "base_quantity" : "12500000000",
                  "base_unit" : "bytes",
                  "item" : "Data transfer",
                  "kind" : "transfer",
                  "quantity" : "12.5",
                  "rate" : "0.02",
                  "unit" : "GB"
                },
                {
                  "amount" : "0.01",
                  "base_quantity" : "360000000000000",
                  "base_unit" : "byte-seconds",
                  "item" : "Storage",
                  "kind" : "storage",
                  "quantity" : "0.137",
                  "rate" : "0.04",
                  "unit" : "GB-month"
                }
              ],
              "period" : {
                "from" : "2026-06-01T00:00:00Z",
                "until" : "2026-06-02T00:00:00Z"
              },
              "provider" : "broker@cloud2.example",
              "records" : [
                {
                  "agreement" : "a1",
                  "from" : "2026-06-01T00:00:00Z",
                  "provider" : "broker@cloud2.example",
                  "sequence" : 1,
                  "until" : "2026-06-02T00:00:00Z"
                }
              ],
              "total" : "0.58"
            }

            """)
        // Amounts stay strings; the document parses.
        let parsed = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(parsed?["total"] as? String == "0.58")
    }

    @Test func amountsShowTheMinorUnit() {
        #expect(BillRenderer.fixed(4, digits: 2) == "4.00")
        #expect(BillRenderer.fixed(d("0.5"), digits: 2) == "0.50")
        #expect(BillRenderer.fixed(d("1234.005"), digits: 2) == "1234.01")
        #expect(BillRenderer.fixed(d("7.5"), digits: 0) == "8")
        #expect(BillRenderer.fixed(d("0.1"), digits: 3) == "0.100")
    }
}
