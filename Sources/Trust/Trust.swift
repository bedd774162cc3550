// The Trust module. See README.md and DESIGN for its role.
