// The mongo service's health check (mongosh runs it inside the container).
// Authenticates as root with the password from its secret (never on a command
// line), initiates the single-node replica set the first time, and reports
// healthy only once this node is the writable primary. rs0's one member is
// named as the app reaches it on the Compose network: mongo:27017.
const password = fs.readFileSync('/run/secrets/mongo_root_password', 'utf8').trim();
db.getSiblingDB('admin').auth('root', password);
try {
  rs.status();
} catch (e) {
  if (e.codeName !== 'NotYetInitialized') {
    throw e;
  }
  rs.initiate({_id: 'rs0', members: [{_id: 0, host: 'mongo:27017'}]});
}
if (!db.hello().isWritablePrimary) {
  quit(1);
}
