"""Lab exercises and the network-namespace topology they run on."""
