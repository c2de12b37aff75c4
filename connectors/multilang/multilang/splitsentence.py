"""Storm's SplitSentence bolt in Python, written with pystorm (as streamparse
components are): every word is emitted anchored to the sentence, which is then acked."""
from pystorm import Bolt


class SplitSentence(Bolt):
    def process(self, tup):
        for word in tup.values[0].split(" "):
            self.emit([word])


SplitSentence().run()
