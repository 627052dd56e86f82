// Creates the application's MongoDB user, once, on the first start of an empty
// data volume (the image runs /docker-entrypoint-initdb.d/*.js then, against a
// temporary local mongod). The user gets readWrite on its own database and
// nothing else. Its name, password and database are taken from the app's own
// connection string (the mongodb_uri secret), so they are written in one place.
const URI_SHAPE = /^mongodb:\/\/([^:@\/]+):([^@\/]+)@[^\/?]+\/([^?\/]+)/;

const uri = fs.readFileSync('/tmp/socialos/mongodb_uri', 'utf8').trim();
const parts = uri.match(URI_SHAPE);
if (!parts) {
  throw new Error('the mongodb_uri secret must look like mongodb://USER:PASSWORD@mongo:27017/DATABASE?...');
}
const [user, pwd, dbName] = parts.slice(1).map(decodeURIComponent);
if (user === 'root' || ['admin', 'local', 'config'].includes(dbName)) {
  throw new Error('the app user must be its own user on its own database, not ' + user + '@' + dbName);
}
db.getSiblingDB(dbName).createUser({user: user, pwd: pwd, roles: [{role: 'readWrite', db: dbName}]});
print('created MongoDB user ' + user + ' (readWrite on ' + dbName + ' only)');
