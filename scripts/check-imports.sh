#!/usr/bin/env bash
# Checks that every target's declared dependencies (Package.swift) are exactly the project
# modules and products its Swift sources import: nothing imported that is not declared, nothing
# declared that is not imported. Modules that come with the toolchain (Foundation, Glibc,
# Testing, ...) are not declared and are left out. A product counts by its name, which is the
# name of the module it provides. The package is read as `INTERCLOUD_FUZZ=1` sees it, every
# target plus the fuzz harness. Exit status is non-zero, naming each mismatch, if any.
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain_modules=(Foundation FoundationEssentials FoundationInternationalization FoundationNetworking
    FoundationXML CoreFoundation Dispatch Glibc Musl Darwin Synchronization Testing XCTest Observation
    RegexBuilder Distributed Swift _Concurrency _StringProcessing)

# Its own scratch directory: reading the manifest then does not wait for a build in .build.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
manifest=$(INTERCLOUD_ONLY='' INTERCLOUD_FUZZ=1 swift package dump-package --scratch-path "$scratch")

# One line per target with sources: name, directory, declared dependencies (space-separated).
targets=$(jq -r '.targets[] | select(.type == "regular" or .type == "executable" or .type == "test")
    | [.name,
       (.path // (if .type == "test" then "Tests/" else "Sources/" end) + .name),
       ([.dependencies[] | (.byName // .target // .product)[0]] | sort | unique | join(" "))]
    | join("\t")' <<<"$manifest")

status=0
checked=0
while IFS=$'\t' read -r name path declared; do
    checked=$((checked + 1))
    # `import M`, `@testable import M`, `@_exported import M`, `public import M`,
    # `import struct M.T`, `import M.Sub`: the module is M.
    imported=$(find "$path" -name '*.swift' -print0 | { xargs -0 -r grep -hE \
        '^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*((public|package|internal|fileprivate|private)[[:space:]]+)?import[[:space:]]' || true; } \
        | sed -E 's/^.*import[[:space:]]+((struct|class|enum|protocol|typealias|func|var|let)[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*).*$/\3/' \
        | sort -u | while read -r module; do
            [[ " ${toolchain_modules[*]} " == *" $module "* ]] || echo "$module"
        done | tr '\n' ' ')
    for module in $imported; do
        [[ " $declared " == *" $module "* ]] || { echo "$name ($path) imports $module but does not declare it"; status=1; }
    done
    for module in $declared; do
        [[ " $imported " == *" $module "* ]] || { echo "$name ($path) declares $module but does not import it"; status=1; }
    done
done <<<"$targets"

if [ "$status" = 0 ]; then
    echo "check-imports: the declared dependencies of all $checked targets equal their imports"
fi
exit "$status"
