// Counts the words of `text`, the way an async Node.js handler does.
exports.handler = async (event, context) => {
  const text = String((event && event.text) || "");
  const counts = {};
  for (const word of text.toLowerCase().match(/[\p{L}\p{N}']+/gu) || []) {
    counts[word] = (counts[word] || 0) + 1;
  }
  console.log(`counted ${Object.keys(counts).length} distinct words`);
  return { words: Object.values(counts).reduce((a, b) => a + b, 0), counts, node: process.version, requestId: context.awsRequestId };
};
