print("sparql-conformance: not yet implemented")
